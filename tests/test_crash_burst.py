"""Durability of paid answers (issue 20): a job keeps at most its providers' concurrency C and
max(``CHATPGT_DB_FLUSH_MAX_ITEMS``, C / 2) more items asked for and not yet on disk, so a crash
costs at most that many requests however busy the worker is.

- The crash drill: 300 topics, 2 s provider latency, the worker SIGKILLed a quarter of the way
  through (about 10 s in, in the middle of a burst of answers), a new worker finishing the job:
  nothing lost or doubled, at most 1.1 provider requests an item in all.
- Writes stalled (the job's row locked, so no flush can commit): the worker stops asking the
  provider once the bound is reached, and finishes the job once the writes go through.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.pairs.models import Pair
from tests import procs
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import control, settled_stats, stats

pytestmark = pytest.mark.e2e

LATENCY_MS = 2000
# Provider requests per item (essay or verdict) the whole job may cost, the crash included.
MAX_REQUESTS_PER_ITEM = 1.1
DEFAULT_FLUSH_MAX_ITEMS = 32  # chatpgt.settings: db_flush_max_items


def unwritten_bound(providers_config: list[dict[str, Any]], flush_max_items: int) -> int:
    """What a job on the fake provider keeps asked for and not yet on disk, at most
    (chatpgt.datagen.executor.max_unwritten)."""
    slots = int(next(p for p in providers_config if p["name"] == "fake")["max_concurrency"])
    return slots + max(flush_max_items, slots // 2)


async def on_disk(session: AsyncSession, job_id: int) -> int:
    """Essays and verdicts of the job whose results are committed."""
    session.expire_all()
    async with session.begin():
        counts = [
            await session.scalar(
                select(func.count())
                .select_from(model)
                .where(model.job_id == job_id, model.status.in_(["succeeded", "failed"]))
            )
            for model in (Generation, Judgment)
        ]
    return sum(int(n or 0) for n in counts)


async def start_job(api: httpx.AsyncClient, fake: httpx.AsyncClient, topics: int) -> int:
    """A job of ``topics`` topics on the fake provider; its id once a quarter of its items
    (two essays a topic and their verdict in both orders) have been answered."""
    titles = [f"Burst topic {i}" for i in range(topics)]
    r = await api.post("/datagen/jobs", json=job_body(titles, provider="fake"))
    assert r.status_code == 201, r.text
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 300
    while True:
        now = await stats(fake)
        if now["total"] - now["in_flight"] >= topics:
            return int(r.json()["id"])
        assert loop.time() < deadline, now
        await asyncio.sleep(0.05)


async def check_finished(session: AsyncSession, job: dict[str, Any], topics: int) -> None:
    """The job succeeded with every item once: nothing lost, nothing doubled."""
    assert job["status"] == "succeeded", job
    session.expire_all()
    async with session.begin():
        gens = (
            (await session.execute(select(Generation).where(Generation.job_id == job["id"])))
            .scalars()
            .all()
        )
        judgments = await session.scalar(
            select(func.count()).select_from(Judgment).where(Judgment.job_id == job["id"])
        )
        pair_keys = (
            await session.execute(
                select(Pair.chosen_generation_id, Pair.rejected_generation_id).where(
                    Pair.job_id == job["id"]
                )
            )
        ).all()
    assert len(gens) == topics * 2 == job["generations"]["total"]
    assert all(g.status == "succeeded" for g in gens)
    assert judgments == job["judgments"]["total"] == job["judgments"]["done"] == topics * 2
    assert len(pair_keys) == len(set(pair_keys)) == job["pairs"] == topics


async def test_a_worker_killed_mid_burst_costs_at_most_its_unwritten_bound(
    api: httpx.AsyncClient,
    session: AsyncSession,
    fake: httpx.AsyncClient,
    service_env: dict[str, str],
    providers_config: list[dict[str, Any]],
    log_dir: Path,
) -> None:
    topics = 300
    items = topics * 4
    bound = unwritten_bound(providers_config, DEFAULT_FLUSH_MAX_ITEMS)
    await control(fake, latency_ms=LATENCY_MS)
    first = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="doomed")
    try:
        job_id = await start_job(api, fake, topics)
        at_kill = await stats(fake)
        first.kill()  # SIGKILL to the worker and its pool child, mid-burst
    finally:
        first.stop()
    written = await on_disk(session, job_id)
    asked = (await stats(fake))["total"]  # every request the dead worker made
    answered = at_kill["total"] - at_kill["in_flight"]
    load = os.getloadavg()[0]

    second = procs.start_worker(service_env, log_dir, "datagen", concurrency=1, name="rescuer")
    try:
        job = await wait_job(api, job_id, within_s=600)
    finally:
        second.stop()
    total = (await settled_stats(fake))["total"]
    print(
        f"\ncrash drill: {items} items; at the kill {answered} answered, {written} on disk "
        f"({answered - written} answered but unwritten), {at_kill['in_flight']} in flight, "
        f"{asked} asked in all; {total} requests for the job ({total / items:.3f} an item); "
        f"load {load:.1f}"
    )
    await check_finished(session, job, topics)
    # What the crash cost: the dead worker's requests whose results were not on disk.
    assert asked - written <= bound, (asked, written, bound)
    assert total <= MAX_REQUESTS_PER_ITEM * items, (total, items)


async def test_requests_wait_for_the_writes_when_they_stall(
    api: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake: httpx.AsyncClient,
    service_env: dict[str, str],
    providers_config: list[dict[str, Any]],
    log_dir: Path,
) -> None:
    topics = 100
    flush_max_items = 48  # over half the concurrency (64): the bound is 64 + 48
    bound = unwritten_bound(providers_config, flush_max_items)
    await control(fake, latency_ms=LATENCY_MS)
    env = {**service_env, "CHATPGT_DB_FLUSH_MAX_ITEMS": str(flush_max_items)}
    worker = procs.start_worker(env, log_dir, "datagen", concurrency=1, name="stalled")
    try:
        job_id = await start_job(api, fake, topics)
        # The job's row locked: every flush (and the heartbeat) waits on it, nothing commits.
        async with sessionmaker() as lock, lock.begin():
            await lock.execute(
                select(DatagenJob.id).where(DatagenJob.id == job_id).with_for_update()
            )
            written = await on_disk(session, job_id)
            # Each item on disk was asked once; the items holding a place are asked for as the
            # provider's slots free up; then the worker waits for its writes.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while True:
                now = await stats(fake)
                if now["in_flight"] == 0 and now["total"] >= written + bound:
                    break
                assert worker.alive(), worker.log()[-4000:]
                assert loop.time() < deadline, (now, written, bound)
                await asyncio.sleep(0.05)
            assert now["total"] <= written + bound, (now, written, bound)
            assert await on_disk(session, job_id) == written
        job = await wait_job(api, job_id, within_s=300)
    finally:
        worker.stop()
    print(
        f"\nwrites stalled: {written} items on disk, {now['total']} asked, bound {bound}; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    await check_finished(session, job, topics)
