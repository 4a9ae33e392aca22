"""Embedded mode: with an in-memory broker the API runs the same Celery tasks in a worker thread,
so a job finishes with no separate worker process and no Redis queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs
from tests.datagen_helpers import job_body, wait_job

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded_api(
    service_env: dict[str, str], log_dir: Path, fake_provider: str
) -> Iterator[tuple[str, procs.Proc]]:
    env = {**service_env, "CHATPGT_BROKER_URL": "memory://"}
    env.pop("CHATPGT_RATE_LIMIT_REDIS_URL", None)
    proc, base = procs.start_api(env, log_dir)
    yield base, proc
    proc.stop()


async def test_a_job_runs_in_the_api_process(
    embedded_api: tuple[str, procs.Proc], clean_db: None
) -> None:
    # The broker is in this API process's memory: no other worker could have run the job.
    base, _ = embedded_api
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        body = job_body(["Embedded one", "Embedded two"])
        job = (await api.post("/datagen/jobs", json=body)).json()
        done = await wait_job(api, job["id"], within_s=60)
        assert done["status"] == "succeeded", done
        assert done["generations"]["done"] == 4 and done["pairs"] >= 1
        pairs = (await api.get("/pairs", params={"job_id": job["id"]})).json()["items"]
        assert len(pairs) == done["pairs"]
