"""A gpu worker killed outright in the middle of a 2-process run: its ranks die with it (none is
left in the process table), and the next worker resumes the run on two processes from its last
checkpoint, to the end, with one model registered."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests import fixtures_training as ft
from tests import procs
from tests import test_training_ddp as ddp
from tests.fixtures_training import finished, sft_body, wait_run
from tests.test_training_resume import wait_lease_expired

pytestmark = pytest.mark.e2e
tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus
ddp_env = ddp.ddp_env
ddp_api_url = ddp.ddp_api_url
api = ddp.api
MAX_STEPS = 12


async def test_killed_worker_takes_its_ranks_along_and_the_run_resumes(
    api: httpx.AsyncClient,
    clean_db: None,
    sessionmaker: async_sessionmaker[AsyncSession],
    ddp_env: dict[str, str],
    log_dir: Path,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    first = procs.start_worker(ddp_env, log_dir, queue="gpu", name="gpu-ddp-first")
    second: procs.Proc | None = None
    try:
        body = sft_body(
            tiny_model_dir,
            essay_corpus,
            per_device_batch_size=1,
            num_processes=2,
            max_steps=MAX_STEPS,
            save_steps=2,
            epochs=20,
        )
        run = (await api.post("/train/sft", json=body)).json()
        run = await wait_run(
            api,
            run["id"],
            lambda r: (
                ((r["progress"].get("step") or 0) >= 3 and r["artifacts"].get("last_checkpoint"))
                or finished(r)
            ),
            worker=first,
            within_s=240,
        )
        assert run["status"] == "running", run
        assert len(ddp.run_processes(run["id"])) >= 3  # the launcher and two ranks
        first.kill()  # SIGKILL to the worker's process group; the ranks are in their own session
        ddp.assert_no_processes_left(run["id"], within_s=10)

        await wait_lease_expired(sessionmaker, run["id"])
        second = procs.start_worker(ddp_env, log_dir, queue="gpu", name="gpu-ddp-second")
        run = await wait_run(api, run["id"], finished, worker=second, within_s=300)
    finally:
        first.stop()
        if second is not None:
            second.stop(timeout=30)

    assert run["status"] == "succeeded", run["error"]
    assert run["attempts"] == 2
    resumed = run["progress"]["resumed_from_step"]
    assert resumed is not None and resumed >= 2 and resumed % 2 == 0, run["progress"]
    state = json.loads(
        (Path(run["artifacts"]["last_checkpoint"]) / "trainer_state.json").read_text()
    )
    assert [e["step"] for e in state["log_history"] if "loss" in e] == list(range(1, MAX_STEPS + 1))
    models = (await api.get("/models")).json()["items"]
    assert [m["name"] for m in models if m["run_id"] == run["id"]] == [run["name"]]
    ddp.assert_no_processes_left(run["id"])
