"""Crash drill: SIGKILL the worker running a job; a fresh worker finishes it without redoing or
duplicating completed work and without losing anything; and a worker that was already running
takes the job over by itself (the periodic sweep for expired leases)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.pairs.models import Pair
from tests import procs
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import control

pytestmark = pytest.mark.e2e


@pytest.fixture
async def slow_provider(fake: httpx.AsyncClient) -> httpx.AsyncClient:
    await control(fake, latency_ms=250)
    return fake


async def start_job(api: httpx.AsyncClient, titles: list[str], essays_done: int) -> dict[str, Any]:
    """A job on the slow fake provider, once ``essays_done`` of its essays are in (or after
    30 s); its last view."""
    job = (await api.post("/datagen/jobs", json=job_body(titles, provider="fake-slow"))).json()
    for _ in range(300):
        job = (await api.get(f"/datagen/jobs/{job['id']}")).json()
        if job["generations"]["done"] >= essays_done:
            break
        await asyncio.sleep(0.1)
    return dict(job)


async def test_sigkilled_workers_job_is_finished_by_another(
    api: httpx.AsyncClient,
    session: AsyncSession,
    slow_provider: httpx.AsyncClient,
    service_env: dict[str, str],
    log_dir: Path,
) -> None:
    first = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="doomed")
    try:
        titles = [f"Crash topic {i}" for i in range(16)]
        job = await start_job(api, titles, essays_done=8)
        job_id = job["id"]
        assert job["status"] == "running"
        first.kill()  # SIGKILL to the worker and its pool children, mid-job
    finally:
        first.stop()

    async with session.begin():
        before = {
            g.id: (g.text, g.finished_at, g.attempts)
            for g in (await session.execute(select(Generation))).scalars()
            if g.status == "succeeded"
        }
    assert len(before) >= 8
    requests_before = (await slow_provider.get("/_stats")).json()["total"]

    second = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="rescuer")
    try:
        job = await wait_job(api, job_id, within_s=120)
    finally:
        second.stop()
    assert job["status"] == "succeeded", job

    session.expire_all()
    gens = (await session.execute(select(Generation))).scalars().all()
    # Nothing lost: every planned generation is terminal; nothing doubled: one row per key.
    assert len(gens) == len(titles) * 2 == job["generations"]["total"]
    assert all(g.status == "succeeded" for g in gens)
    # Completed work was not redone: the rows done before the kill are unchanged.
    for g in gens:
        if g.id in before:
            assert (g.text, g.finished_at, g.attempts) == before[g.id]
    # The rescuer made requests only for the work left (plus at most the ones in flight).
    remaining = len(gens) - len(before) + job["judgments"]["total"]
    requests_after = (await slow_provider.get("/_stats")).json()["total"] - requests_before
    assert requests_after <= remaining + 8
    judgments = await session.scalar(select(func.count()).select_from(Judgment))
    assert judgments == job["judgments"]["total"] == len(titles) * 2
    pair_keys = (
        await session.execute(
            select(Pair.job_id, Pair.chosen_generation_id, Pair.rejected_generation_id)
        )
    ).all()
    assert len(pair_keys) == len(set(pair_keys)) == job["pairs"]


def _parent(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _runs(worker: procs.Proc, pid: int) -> bool:
    """Whether ``pid`` is the worker's main process or one of its pool processes."""
    return pid == worker.popen.pid or _parent(pid) == worker.popen.pid


async def test_a_running_worker_takes_over_a_dead_workers_job(
    api: httpx.AsyncClient,
    session: AsyncSession,
    slow_provider: httpx.AsyncClient,
    service_env: dict[str, str],
    log_dir: Path,
) -> None:
    """Both workers run before the job exists, so no start-up recovery can help: after the
    one holding the job is killed, the other takes the sweep Celery beat sends, finds the
    expired lease and re-enqueues the job, which it then runs."""
    env = {**service_env, "CHATPGT_JOB_SWEEP_INTERVAL_S": "1"}
    workers = [
        procs.start_worker(env, log_dir, "datagen", concurrency=1, name=f"sweeper-{i}")
        for i in range(2)
    ]
    beat = procs.start_beat(env, log_dir)
    try:
        # No wait needed: start_worker returns once a worker logged "ready.", which Celery does
        # after the worker_ready handlers (the start-up recovery) ran; the sweep is beat's.
        titles = [f"Sweep topic {i}" for i in range(16)]
        job = await start_job(api, titles, essays_done=6)
        job_id = job["id"]
        assert job["status"] == "running", job
        owner = await session.scalar(select(DatagenJob.lease_owner).where(DatagenJob.id == job_id))
        assert owner is not None
        pid = int(owner.split(":")[1])
        doomed = next(w for w in workers if _runs(w, pid))
        survivor = next(w for w in workers if w is not doomed)
        doomed.kill()
        job = await wait_job(api, job_id, within_s=90)
        assert job["status"] == "succeeded", job
        assert "lease ran out; re-enqueuing it" in survivor.log()
    finally:
        beat.stop()
        for w in workers:
            w.stop()
    assert "Sending due task datagen-orphan-sweep" in beat.log()
    gens = (
        (await session.execute(select(Generation).where(Generation.job_id == job_id)))
        .scalars()
        .all()
    )
    assert len(gens) == len(titles) * 2 == job["generations"]["total"]
    assert all(g.status == "succeeded" for g in gens)
    judgments = await session.scalar(
        select(func.count()).select_from(Judgment).where(Judgment.job_id == job_id)
    )
    assert judgments == job["judgments"]["total"] == len(titles) * 2
