"""GET /metrics: after a real job (uvicorn API, Celery worker process, Postgres, Redis, the fake
provider), the exposition parsed with prometheus_client's parser shows the job's counts as the
rows have them, the worker process's provider samples (multiprocess mode), and queue depths."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.metrics import prune_dead_processes
from chatpgt.observability.queues import queue_depths
from chatpgt.training.models import TrainingRun
from tests import procs
from tests.conftest import REDIS_TEST_URL
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import control, settled_stats
from tests.test_auth import bearer, in_process, new_key

pytestmark = pytest.mark.e2e

# An item row's status (the label) and the name GET /datagen/jobs/{id} counts it under.
STATUSES = {
    "succeeded": "done",
    "failed": "failed",
    "skipped": "skipped",
    "cancelled": "cancelled",
    "pending": "pending",
}


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(found: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(api: httpx.AsyncClient) -> list[Sample]:
    answer = await api.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return samples(answer.text)


async def test_metrics_after_a_job_match_its_rows(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    before = await scrape(api)
    # Some 429s (at least one, whatever the draws) and a 5xx, all retried.
    await control(fake, rate_429=0.15, retry_after_s=0.01, script=["429", "503"])
    titles = [f"Metrics topic {i} {uuid.uuid4().hex[:6]}" for i in range(4)]
    created = await api.post("/datagen/jobs", json=job_body(titles, samples=2))
    assert created.status_code in (200, 201, 202), created.text
    job = await wait_job(api, created.json()["id"])
    assert job["status"] == "succeeded", job
    served = await settled_stats(fake)
    after = await scrape(api)

    # The database's counts: the session fixture emptied every table, so this job is all there is.
    assert total(after, "chatpgt_datagen_jobs", status="succeeded") == 1
    assert total(after, "chatpgt_datagen_jobs") == 1
    for stage, key in (("generation", "generations"), ("judgment", "judgments")):
        for status, counted_as in STATUSES.items():
            assert (
                total(after, "chatpgt_datagen_items", stage=stage, provider="fake", status=status)
                == job[key][counted_as]
            ), (stage, status)
        assert total(after, "chatpgt_datagen_items", stage=stage) == job[key]["total"]
    assert job["generations"]["done"] == 12 and job["judgments"]["done"] > 0
    assert total(after, "chatpgt_datagen_tokens_total", kind="prompt") == job["prompt_tokens"]
    assert (
        total(after, "chatpgt_datagen_tokens_total", kind="completion") == job["completion_tokens"]
    )
    assert total(after, "chatpgt_datagen_cost_usd_total") == pytest.approx(job["cost_usd"])
    assert total(after, "chatpgt_datagen_cost_usd_total", model="judge") > 0

    # The worker process's samples, summed by the API from the metrics directory: every
    # request the fake server answered is one observed attempt, and its 429s are counted.
    attempts = total(
        after, "chatpgt_provider_request_duration_seconds_count", provider="fake"
    ) - total(before, "chatpgt_provider_request_duration_seconds_count", provider="fake")
    assert attempts == served["total"] > 0
    latency = total(after, "chatpgt_provider_request_duration_seconds_sum", provider="fake")
    assert latency > total(before, "chatpgt_provider_request_duration_seconds_sum", provider="fake")
    rate_limited = total(after, "chatpgt_provider_rate_limited_total", provider="fake") - total(
        before, "chatpgt_provider_rate_limited_total", provider="fake"
    )
    assert rate_limited == served["by_status"].get("429", 0) >= 1
    retries = total(after, "chatpgt_provider_retries_total", provider="fake") - total(
        before, "chatpgt_provider_retries_total", provider="fake"
    )
    assert retries == served["total"] - (job["generations"]["total"] + job["judgments"]["total"])
    assert total(after, "chatpgt_provider_retries_total", reason="429") >= 1
    assert (
        total(after, "chatpgt_provider_request_duration_seconds_count", status="200")
        >= job["generations"]["done"] + job["judgments"]["done"]
    )

    # The broker was read: both queues are there, and nothing waits once the job is done.
    assert total(after, "chatpgt_metrics_source_up", source="broker") == 1
    assert total(after, "chatpgt_metrics_source_up", source="database") == 1
    depths = {s.labels["queue"]: s.value for s in after if s.name == "chatpgt_queue_depth"}
    assert set(depths) == {"datagen", "gpu"} and depths["datagen"] == 0


def test_queue_depths_count_waiting_messages() -> None:
    """A throw-away prefix and queue on the test Redis: what is published is counted."""
    prefix = f"chatpgt-metrics-{uuid.uuid4().hex[:8]}:"
    options = {"global_keyprefix": prefix}
    with Connection(REDIS_TEST_URL, transport_options=options) as conn:
        queue = conn.SimpleQueue("waiting")
        try:
            assert queue_depths(REDIS_TEST_URL, ["waiting", "other"], key_prefix=prefix) == {
                "waiting": 0,
                "other": 0,
            }
            for i in range(3):
                queue.put({"n": i})
            depths = queue_depths(REDIS_TEST_URL, ["waiting", "other"], key_prefix=prefix)
            assert depths == {"waiting": 3, "other": 0}
            queue.get(timeout=5).ack()
            assert queue_depths(REDIS_TEST_URL, ["waiting"], key_prefix=prefix)["waiting"] == 2
        finally:
            queue.clear()
            queue.close()


async def add_runs(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Two SFT runs that reached steps 7 and 5, and a queued DPO run (no step yet)."""
    async with sessionmaker() as s:
        for kind, step in (("sft", 7), ("sft", 5), ("dpo", None)):
            progress = {"step": step, "total_steps": 10} if step is not None else {}
            s.add(
                TrainingRun(
                    kind=kind,
                    request={},
                    start_model={},
                    output_name=f"metrics-{uuid.uuid4().hex[:8]}",
                    progress=progress,
                )
            )
        await s.commit()


def assert_runs(found: list[Sample]) -> None:
    assert total(found, "chatpgt_training_runs", kind="sft", status="queued") == 2
    assert total(found, "chatpgt_training_runs", kind="dpo") == 1
    assert total(found, "chatpgt_training_steps_total", kind="sft") == 12
    assert total(found, "chatpgt_training_steps_total", kind="dpo") == 0


async def test_a_broker_that_does_not_answer_is_reported_down(
    service_env: dict[str, str], session: AsyncSession
) -> None:
    """The database families are still served; the broker is marked down, within the timeout."""
    closed = f"redis://127.0.0.1:{procs.free_port()}/0"
    async with in_process(
        "127.0.0.1", broker_url=closed, embedded_worker=False, metrics_timeout_s=2.0
    ) as (client, app):
        await add_runs(app.state.sessionmaker)
        answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    found = samples(answer.text)
    assert_runs(found)
    assert total(found, "chatpgt_metrics_source_up", source="broker") == 0
    assert total(found, "chatpgt_metrics_source_up", source="database") == 1
    assert not [s for s in found if s.name == "chatpgt_queue_depth"]
    assert total(found, "chatpgt_metrics_source_duration_seconds", source="broker") < 4


async def test_embedded_mode_sqlite_and_the_memory_broker(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """The embedded defaults: the same families from SQLite, queue depths from memory://."""
    async with in_process(
        "127.0.0.1",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'chatpgt.db'}",
        broker_url="memory://",
        embedded_worker=False,
    ) as (client, app):
        await add_runs(app.state.sessionmaker)
        answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    found = samples(answer.text)
    assert total(found, "chatpgt_metrics_source_up") == 2
    assert_runs(found)
    depths = {s.labels["queue"]: s.value for s in found if s.name == "chatpgt_queue_depth"}
    assert depths == {"datagen": 0, "gpu": 0}


async def test_metrics_follow_the_key_rules(
    service_env: dict[str, str],
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Not open like the health check: a client that needs a key needs one here, and a read
    key is enough. An API open to loopback serves a loopback scraper without one."""
    read = await new_key(sessionmaker, "read", "prometheus")
    async with in_process("10.1.2.3", auth="auto", api_host="127.0.0.1") as (client, _):
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        allowed = await client.get("/metrics", headers=bearer(read))
        assert allowed.status_code == 200
        assert total(samples(allowed.text), "chatpgt_metrics_source_up", source="database") == 1
    async with in_process("127.0.0.1", auth="auto", api_host="127.0.0.1") as (client, _):
        assert (await client.get("/metrics")).status_code == 200
    async with in_process("127.0.0.1", auth="required") as (client, _):
        assert (await client.get("/metrics")).status_code == 401


def test_a_starting_process_removes_the_files_of_its_dead_processes(tmp_path: Path) -> None:
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    files = {
        "dead": tmp_path / f"counter_{host}-{dead_pid}.db",
        "alive": tmp_path / f"histogram_{host}-{os.getpid()}.db",
        "other host": tmp_path / f"counter_elsewhere-{dead_pid}.db",
    }
    for path in files.values():
        path.write_bytes(b"")
    assert prune_dead_processes(tmp_path) == [files["dead"]]
    assert {p.name for p in tmp_path.iterdir()} == {
        files["alive"].name,
        files["other host"].name,
    }
