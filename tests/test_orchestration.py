"""The orchestration layer: transition tables, the one transition function on real rows, the
database-outage retry, the beat schedule of the orphan sweep, and training runs re-enqueued
under their own kind's task."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen import repository as datagen_repo
from chatpgt.datagen.models import DatagenJob
from chatpgt.db.base import utcnow
from chatpgt.errors import InvalidState
from chatpgt.orchestration import leases
from chatpgt.orchestration.retry import until_reachable
from chatpgt.orchestration.status import (
    DATAGEN_JOB,
    DEDUP_SCAN,
    TERMINAL,
    TRAINING_RUN,
    RunStatus,
)
from chatpgt.orchestration.tasks import DATAGEN_SWEEP, TRAIN_DPO, TRAIN_SFT, training_task
from chatpgt.settings import Settings
from chatpgt.training.models import TrainingRun
from tests import factories


def test_transition_tables() -> None:
    assert DATAGEN_JOB.sources_for("running") == {RunStatus.QUEUED}
    assert TRAINING_RUN.sources_for("running") == {RunStatus.QUEUED, RunStatus.RUNNING}
    assert DATAGEN_JOB.sources_for("cancelled") == {RunStatus.QUEUED, RunStatus.RUNNING}
    assert DEDUP_SCAN.sources_for("running") == {RunStatus.QUEUED}
    assert DEDUP_SCAN.sources_for("succeeded") == {RunStatus.RUNNING}
    for lifecycle in (DATAGEN_JOB, TRAINING_RUN, DEDUP_SCAN):
        for terminal in TERMINAL:
            assert not any(lifecycle.allows(terminal, t) for t in RunStatus)
    with pytest.raises(InvalidState, match="a succeeded job cannot become cancelled"):
        DATAGEN_JOB.check("succeeded", "cancelled")
    with pytest.raises(ValueError, match="unknown job status 'paused'"):
        DATAGEN_JOB.sources_for("paused")


async def test_one_transition_function_guards_state_and_lease(session: AsyncSession) -> None:
    job = await factories.job(session, status="queued")
    # Not allowed from queued: nothing changes.
    assert not await datagen_repo.transition(session, job.id, "succeeded")
    assert await datagen_repo.claim(session, job.id, "w1", 30) == "claimed"
    assert await datagen_repo.claim(session, job.id, "w2", 30) == "busy"
    # Only the lease owner finishes it; a terminal transition clears the lease.
    assert not await datagen_repo.transition(session, job.id, "succeeded", owner="w2")
    assert await datagen_repo.transition(session, job.id, "succeeded", owner="w1")
    await session.commit()
    row = await session.get(DatagenJob, job.id)
    assert row is not None
    await session.refresh(row)
    assert row.status == "succeeded" and row.lease_owner is None and row.finished_at
    assert await datagen_repo.claim(session, job.id, "w1", 30) == "succeeded"


async def test_the_sweep_finds_expired_leases_only(session: AsyncSession) -> None:
    live = await factories.job(session, status="running", lease_owner="a")
    dead = await factories.job(session, status="running", lease_owner="b")
    for job, offset in ((live, 30), (dead, -1)):
        job.lease_expires_at = utcnow() + timedelta(seconds=offset)
    await session.flush()
    assert await datagen_repo.orphaned_jobs(session) == [dead.id]
    ids = list(await session.scalars(leases.orphans_stmt(DatagenJob)))
    assert ids == [dead.id]


async def test_until_reachable_waits_out_an_outage_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries = 0

    async def flaky() -> str:
        nonlocal tries
        tries += 1
        if tries < 4:
            raise ConnectionRefusedError(111, "Connect call failed")
        return "done"

    with caplog.at_level(logging.WARNING, logger="chatpgt.orchestration.retry"):
        result = await until_reachable(flaky, label="job 1", what="flush", first_delay_s=0.001)
    assert result == "done" and tries == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # one line when it goes, one when it is back
    assert messages[0].startswith("job 1: database unreachable (flush: ")
    assert messages[1].startswith("job 1: database back after ")

    async def refused() -> None:
        nonlocal tries
        tries += 1
        raise ValueError("a statement the database refused")

    tries = 0
    with pytest.raises(ValueError):
        await until_reachable(refused, label="job 1", what="flush", first_delay_s=0.001)
    assert tries == 1


def test_the_orphan_sweep_is_a_beat_schedule() -> None:
    from workers import datagen_tasks  # noqa: F401  (registers the tasks)
    from workers.app import DATAGEN_QUEUE, beat_schedule, celery_app

    assert DATAGEN_SWEEP in celery_app.tasks
    [entry] = beat_schedule(5.0).values()
    assert entry["task"] == DATAGEN_SWEEP and entry["schedule"] == 5.0
    assert entry["options"]["queue"] == DATAGEN_QUEUE
    assert beat_schedule(0) == {}


async def test_training_runs_are_re_enqueued_under_their_own_kind(
    session: AsyncSession, service_env: dict[str, str]
) -> None:
    """A DPO run whose message was lost comes back as chatpgt.train.dpo, not .sft."""
    from workers.training_tasks import recovery_messages

    old = utcnow() - timedelta(hours=1)
    runs = {}
    for kind in ("sft", "dpo"):
        run = TrainingRun(
            kind=kind,
            status="queued",
            request={},
            start_model={"ref": "tiny", "path": "/models/tiny"},
            output_name=f"tiny-{kind}",
            created_at=old,
        )
        session.add(run)
        await session.flush()
        runs[kind] = run.id
    await session.commit()
    assert training_task("dpo") == TRAIN_DPO and training_task("sft") == TRAIN_SFT
    messages = recovery_messages(Settings(database_url=service_env["CHATPGT_DATABASE_URL"]))
    assert sorted(messages) == sorted(
        [(TRAIN_SFT, runs["sft"], None), (TRAIN_DPO, runs["dpo"], None)]
    )
    assert await session.scalar(select(TrainingRun.kind).where(TrainingRun.id == runs["dpo"]))
