"""Database restart drill: Postgres goes away in the middle of a datagen job and comes back.

The API and a real Celery datagen worker run against a throw-away Postgres cluster
(tests/pgcluster.py; the shared server is never touched). While the job runs, the server is
stopped (``fast``: a clean shutdown that terminates sessions; ``immediate``: a crash, recovered
at the next start), kept down until the worker's heartbeat and flusher have both met the outage
(longer than a heartbeat and many flush intervals, shorter than the job lease), and started
again. The job must finish ``succeeded`` in the same worker
process and the same run (no retry, no re-claim), with nothing lost, doubled or redone; the API
answers 503 problem+json while the database is down and 200 once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository, service
from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.datagen.runner import JobRunner
from chatpgt.datagen.schemas import DatagenJobCreate
from chatpgt.db.session import is_unavailable, make_engine, make_sessionmaker, transaction
from chatpgt.orchestration.status import ITEM_TERMINAL
from chatpgt.pairs.models import Pair
from chatpgt.providers.client import ProviderPool
from chatpgt.settings import Settings
from tests import procs
from tests.conftest import alembic_config
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import control
from tests.pgcluster import PgCluster, find_bindir

pytestmark = pytest.mark.e2e

TOPICS = 20
LEASE_S = 20  # the realistic case: a restart takes less than the lease (default 30 s)
HEARTBEAT_S = 1


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed")
    pg = PgCluster(bindir)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture(scope="module")
def restart_env(cluster: PgCluster, service_env: dict[str, str]) -> dict[str, str]:
    url = cluster.create_database("chatpgt_restart")
    command.upgrade(alembic_config(url), "head")
    return {
        **service_env,
        "CHATPGT_DATABASE_URL": url,
        # Its own queue: job ids of this database must not reach the session's other workers.
        "CHATPGT_BROKER_KEY_PREFIX": f"chatpgt-test-restart-{uuid.uuid4().hex[:8]}:",
        "CHATPGT_JOB_LEASE_S": str(LEASE_S),
        "CHATPGT_JOB_HEARTBEAT_S": str(HEARTBEAT_S),
    }


@pytest.fixture(scope="module")
def restart_api(restart_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    proc, base = procs.start_api(restart_env, log_dir)
    yield base
    proc.stop()


@pytest.fixture(scope="module")
def worker(restart_env: dict[str, str], log_dir: Path, restart_api: str) -> Iterator[procs.Proc]:
    proc = procs.start_worker(restart_env, log_dir, "datagen", concurrency=1, name="restart")
    yield proc
    proc.stop()


@pytest.fixture
async def db(restart_env: dict[str, str]) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(restart_env["CHATPGT_DATABASE_URL"], pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def provider(fake: httpx.AsyncClient) -> httpx.AsyncClient:
    await control(fake, latency_ms=200)
    return fake


async def _first_answer_while_down(api: httpx.AsyncClient, path: str) -> httpx.Response:
    """The first answer that is not a 200 (the API has noticed the database is gone)."""
    while True:
        r = await api.get(path, timeout=5.0)
        if r.status_code != 200:
            return r
        await asyncio.sleep(0.05)


async def _logged(proc: procs.Proc, needle: str, *, since: int, within_s: float = 60) -> None:
    """Wait until ``needle`` appears in the process's log after offset ``since``."""
    async with asyncio.timeout(within_s):
        while True:
            if needle in proc.log()[since:]:
                return
            await asyncio.sleep(0.05)


def _pids(proc: procs.Proc) -> set[int]:
    """The worker's main process and its pool children."""
    pid = proc.popen.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {pid, *map(int, children)}


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_job_survives_a_database_restart(
    mode: str,
    cluster: PgCluster,
    restart_api: str,
    worker: procs.Proc,
    db: async_sessionmaker[AsyncSession],
    provider: httpx.AsyncClient,
) -> None:
    pids = _pids(worker)
    log_before = len(worker.log())
    titles = [f"Restart {mode} topic {i}" for i in range(TOPICS)]
    async with httpx.AsyncClient(base_url=restart_api, timeout=30.0) as api:
        r = await api.post("/datagen/jobs", json=job_body(titles, provider="fake-slow"))
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        for _ in range(600):
            job = (await api.get(f"/datagen/jobs/{job_id}")).json()
            if job["generations"]["done"] >= 6:
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "running", job

        async with db() as s:
            before = {
                g.id: (g.text, g.finished_at, g.attempts)
                for g in (await s.scalars(select(Generation).where(Generation.job_id == job_id)))
                if g.status == "succeeded"
            }
            owner = await s.scalar(select(DatagenJob.lease_owner).where(DatagenJob.id == job_id))
        assert len(before) >= 6 and owner

        cluster.stop(mode)
        # The API answers at once with a 503 the client may retry: not a 500, not a hang (a
        # request that hangs fails the test with its client's timeout).
        r = await _first_answer_while_down(api, f"/datagen/jobs/{job_id}")
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 503
        assert int(r.headers["retry-after"]) > 0
        # Down for longer than a heartbeat and many flushes: both have met the outage.
        for step in ("heartbeat", "flush"):
            await _logged(worker, f"database unreachable ({step}: ", since=log_before)
        assert worker.alive()
        cluster.start()

        r = await api.get(f"/datagen/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = await wait_job(api, job_id, within_s=120)

    assert job["status"] == "succeeded", job
    assert not job["error"], job
    # The same worker processes ran it to the end, in one run: never died, never retried, the
    # job was claimed once and kept its lease through the outage.
    assert worker.alive() and _pids(worker) == pids
    log = worker.log()[log_before:]
    assert "Retry in" not in log and "lease lost" not in log, log[-4000:]

    async with db() as s:
        row = await s.get(DatagenJob, job_id)
        assert row is not None and row.attempts == 1
        gens = (await s.scalars(select(Generation).where(Generation.job_id == job_id))).all()
        judgments = (await s.scalars(select(Judgment).where(Judgment.job_id == job_id))).all()
        pairs = (await s.scalars(select(Pair).where(Pair.job_id == job_id))).all()
        gen_keys = (
            await s.execute(
                select(func.count())
                .select_from(Generation)
                .where(Generation.job_id == job_id)
                .group_by(Generation.topic_id, Generation.generator_key, Generation.sample_index)
            )
        ).scalars()
        judgment_keys = (
            await s.execute(
                select(func.count())
                .select_from(Judgment)
                .where(Judgment.job_id == job_id)
                .group_by(Judgment.generation_a_id, Judgment.generation_b_id)
            )
        ).scalars()
        assert set(gen_keys) == {1} and set(judgment_keys) == {1}

    # Nothing lost: every planned item is there, terminal, and the counts reconcile.
    assert len(gens) == TOPICS * 2 == job["generations"]["total"]
    assert len(judgments) == TOPICS * 2 == job["judgments"]["total"]
    for kind in ("generations", "judgments"):
        counts = job[kind]
        assert counts["done"] + counts["failed"] == counts["total"], job
    assert all(g.status in ITEM_TERMINAL for g in gens)
    assert all(j.status in ITEM_TERMINAL for j in judgments)
    assert all(g.status == "succeeded" and g.text for g in gens)
    assert all(j.status == "succeeded" for j in judgments)
    # Work done before the outage was kept as it was, not redone.
    by_id = {g.id: g for g in gens}
    for gen_id, values in before.items():
        g = by_id[gen_id]
        assert (g.text, g.finished_at, g.attempts) == values
    stats = (await provider.get("/_stats")).json()
    # One request an item (a few more only if one timed out under load and was retried).
    assert stats["total"] <= len(gens) + len(judgments) + 8, stats
    # Pairs: one per ordered pair of essays, built from the texts that are on disk.
    keys = [(p.chosen_generation_id, p.rejected_generation_id) for p in pairs]
    assert len(keys) == len(set(keys)) == job["pairs"] > 0
    for p in pairs:
        assert p.chosen_generation_id is not None and p.rejected_generation_id is not None
        assert p.chosen == by_id[p.chosen_generation_id].text
        assert p.rejected == by_id[p.rejected_generation_id].text
    # The runner did see the outage (the drill hit the job while it was running).
    assert "database unreachable" in log and "database back after" in log, log[-4000:]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_reads_right_after_a_restart_are_answered(
    mode: str, cluster: PgCluster, restart_api: str
) -> None:
    """The API pings no connection on checkout; a pooled connection the restart closed is
    replaced when checked out, so no request after the restart meets a dead connection (not
    even the first ones, when nothing asked while the database was down)."""
    async with httpx.AsyncClient(base_url=restart_api, timeout=30.0) as api:

        async def burst() -> list[int]:
            pages = [api.get("/pairs", params={"limit": 1}) for _ in range(12)]
            return [r.status_code for r in await asyncio.gather(*pages)]

        assert set(await burst()) == {200}  # several pooled connections, all idle now
        cluster.stop(mode)
        cluster.start()
        assert set(await burst()) == {200}


async def test_pages_while_the_database_is_down_are_503s(
    cluster: PgCluster, restart_api: str
) -> None:
    """GET /pairs answered by the page lane (api.page_lane) and by the route (a repeated
    parameter sends it there): both a 503 problem+json the client may retry while the database
    is down, with connections in the pool and without, and 200s once it is back."""
    queries = ("/pairs?limit=1", "/pairs?limit=2&limit=1")
    async with httpx.AsyncClient(base_url=restart_api, timeout=30.0) as api:
        for query in queries:
            assert (await api.get(query)).status_code == 200
        cluster.stop("fast")
        try:
            for query in queries * 2:
                r = await api.get(query, timeout=15.0)
                assert r.status_code == 503, (query, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert int(r.headers["retry-after"]) > 0
        finally:
            cluster.start()
        for query in queries:
            assert (await api.get(query)).status_code == 200


async def test_unavailable_errors_are_told_from_refused_statements(
    cluster: PgCluster, db: async_sessionmaker[AsyncSession]
) -> None:
    """What the runner retries and the API answers 503 for, on errors a real server raises."""
    async with db() as s:
        with pytest.raises(Exception) as refused_statement:
            await s.execute(text("SELECT 1 / 0"))
    assert not is_unavailable(refused_statement.value)

    async with db() as victim, db() as admin:
        await victim.begin()
        pid = await victim.scalar(text("SELECT pg_backend_pid()"))
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await admin.commit()
        with pytest.raises(Exception) as terminated:
            await victim.execute(text("SELECT 1"))
    assert is_unavailable(terminated.value)

    nowhere = make_engine(
        cluster.url("postgres").replace(str(cluster.port), str(procs.free_port()))
    )
    try:
        with pytest.raises(Exception) as refused:
            async with nowhere.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert is_unavailable(refused.value)
    finally:
        await nowhere.dispose()


async def test_a_runner_whose_lease_was_taken_over_writes_nothing_more(
    restart_env: dict[str, str],
    db: async_sessionmaker[AsyncSession],
    provider: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After an outage longer than the lease, another worker may have claimed the job. The old
    runner's next flush finds the lease gone and stops without writing its batch, well before
    its next heartbeat (30 s) would have noticed: the flusher is what reports it."""
    settings = Settings(
        database_url=restart_env["CHATPGT_DATABASE_URL"], job_lease_s=30, job_heartbeat_s=30
    )
    titles = [f"Takeover topic {i}" for i in range(TOPICS)]
    req = DatagenJobCreate.model_validate(job_body(titles, provider="fake-slow"))
    async with transaction(db) as s:
        job_id = (await service.create_job(s, settings, req, None))[0].id

    async def finished() -> dict[tuple[str, int], object]:
        async with db() as s:
            rows = {
                ("generation", g.id): (g.status, g.finished_at)
                for g in await s.scalars(select(Generation).where(Generation.job_id == job_id))
            }
            for j in await s.scalars(select(Judgment).where(Judgment.job_id == job_id)):
                rows[("judgment", j.id)] = (j.status, j.finished_at)
            return rows

    async with ProviderPool(settings.provider_configs()) as pool:
        run = asyncio.create_task(JobRunner(job_id, db, pool, settings, owner="first").run())
        for _ in range(600):
            if sum(status == "succeeded" for status, _ in (await finished()).values()) >= 4:
                break
            await asyncio.sleep(0.05)
        # The lease ran out during an outage and another worker claimed the job (one
        # transaction, so the first runner cannot renew the lease in between).
        async with transaction(db) as s:
            await s.execute(
                update(DatagenJob)
                .where(DatagenJob.id == job_id)
                .values(lease_expires_at=func.now() - text("interval '1 second'"))
            )
            assert await repository.claim(s, job_id, "second", 60) == "claimed"
        at_takeover = await finished()
        with caplog.at_level(logging.WARNING, logger="chatpgt.datagen"):
            outcome = await asyncio.wait_for(run, timeout=60)

    assert outcome == "lease_lost"
    # A flush found the lease gone (the heartbeat, 30 s apart, never ran).
    noticed = [r.name for r in caplog.records if "lease lost" in r.getMessage()]
    assert noticed and noticed[0] in ("chatpgt.datagen.flusher", "chatpgt.datagen.planner")
    assert await finished() == at_takeover  # not one result written after the takeover
    succeeded = sum(status == "succeeded" for status, _ in at_takeover.values())
    assert 4 <= succeeded < len(at_takeover)
    async with db() as s:
        job = await s.get(DatagenJob, job_id)
        assert job is not None and job.lease_owner == "second" and job.status == "running"
    async with transaction(db) as s:  # the second worker is imaginary: close the job
        await repository.cancel_pending_items(s, job_id)
        assert await repository.transition(
            s, job_id, "cancelled", owner="second", stop_reason="cancelled"
        )


async def test_a_worker_started_while_the_database_is_down_recovers_jobs_when_it_is_back(
    cluster: PgCluster,
    restart_env: dict[str, str],
    restart_api: str,
    db: async_sessionmaker[AsyncSession],
    provider: httpx.AsyncClient,
    log_dir: Path,
) -> None:
    settings = Settings(database_url=restart_env["CHATPGT_DATABASE_URL"])
    req = DatagenJobCreate.model_validate(job_body(["Recovered topic"], provider="fake"))
    async with transaction(db) as s:
        job_id = (await service.create_job(s, settings, req, None))[0].id
        # Queued a minute ago and never run: its message was lost (what start-up recovery is for).
        await s.execute(
            update(DatagenJob)
            .where(DatagenJob.id == job_id)
            .values(created_at=func.now() - text("interval '1 minute'"))
        )
    cluster.stop("fast")
    try:
        late = procs.start_worker(restart_env, log_dir, "datagen", concurrency=1, name="late")
    finally:
        cluster.start()
    try:
        procs.wait_log(late, "database unreachable at start-up")
        async with httpx.AsyncClient(base_url=restart_api, timeout=30.0) as api:
            job = await wait_job(api, job_id, within_s=120)
        assert job["status"] == "succeeded", job
        assert late.alive()
    finally:
        late.stop()
