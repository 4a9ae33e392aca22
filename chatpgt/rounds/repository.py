"""The SQL of rounds runs and their rounds. Status changes of a rounds run go through the
orchestration layer's ``transition_stmt`` with the ``ROUNDS_RUN`` lifecycle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.orchestration import leases
from chatpgt.orchestration.status import ACTIVE, ROUNDS_RUN, RunStatus
from chatpgt.rounds.models import Round, RoundsRun


async def create_run(
    session: AsyncSession,
    *,
    name: str | None,
    request: dict[str, Any],
    start_model: dict[str, Any],
) -> RoundsRun:
    """Insert a queued rounds run (named ``rounds-<id>`` without ``name``)."""
    run = RoundsRun(
        status=RunStatus.QUEUED,
        name=name or "",
        request=request,
        start_model=start_model,
        attempts=0,
        cancel_requested=False,
    )
    session.add(run)
    await session.flush()
    if not name:
        run.name = f"rounds-{run.id}"
        await session.flush()
    return run


async def get_run(
    session: AsyncSession, run_id: int, *, for_update: bool = False
) -> RoundsRun | None:
    stmt = select(RoundsRun).where(RoundsRun.id == run_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_runs(session: AsyncSession, *, limit: int, before: int | None) -> list[RoundsRun]:
    stmt = select(RoundsRun).order_by(RoundsRun.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(RoundsRun.id < before)
    return list((await session.execute(stmt)).scalars())


async def rounds_of(session: AsyncSession, run_ids: Sequence[int]) -> dict[int, list[Round]]:
    """Each run's rounds, in order."""
    out: dict[int, list[Round]] = {i: [] for i in run_ids}
    if not run_ids:
        return out
    rows = await session.execute(
        select(Round).where(Round.rounds_run_id.in_(run_ids)).order_by(Round.number)
    )
    for r in rows.scalars():
        out[r.rounds_run_id].append(r)
    return out


async def add_round(session: AsyncSession, **values: Any) -> Round:
    row = Round(pairs=0, pairs_trained=0, error=None, **values)
    session.add(row)
    await session.flush()
    return row


async def transition(session: AsyncSession, run_id: int, target: str, **values: Any) -> bool:
    return await leases.transition(session, RoundsRun, ROUNDS_RUN, run_id, target, **values)


async def take_lease(session: AsyncSession, run_id: int, owner: str, lease_s: float) -> str | None:
    """The run's status when ``owner`` now holds its lease; None when it is terminal, unknown
    or held by another live step."""
    row = (await session.execute(leases.take_lease_stmt(RoundsRun, run_id, owner, lease_s))).first()
    return None if row is None else str(row[0])


async def release_lease(session: AsyncSession, run_id: int, owner: str) -> None:
    await session.execute(leases.release_stmt(RoundsRun, run_id, owner))


async def set_step_token(session: AsyncSession, run_id: int, token: str) -> None:
    await session.execute(update(RoundsRun).where(RoundsRun.id == run_id).values(step_token=token))


async def request_cancel(session: AsyncSession, run_id: int) -> bool:
    """Flag an active run for cancel (its next step cancels the current job or run)."""
    stmt = leases.request_cancel_stmt(RoundsRun, run_id, ACTIVE)
    return (await session.execute(stmt)).first() is not None


async def stalled_runs(session: AsyncSession, idle_s: float) -> list[int]:
    """Active runs no step has touched for ``idle_s``: their chain of step messages was lost
    (a worker killed between a step and its successor's send). What the sweep re-enqueues."""
    since = leases.now() - timedelta(seconds=idle_s)
    stmt = (
        select(RoundsRun.id)
        .where(
            RoundsRun.status.in_(ACTIVE),
            RoundsRun.updated_at.is_(None) | (RoundsRun.updated_at < since),
            leases.lease_free(RoundsRun),
        )
        .order_by(RoundsRun.id)
    )
    return [int(i) for i in (await session.execute(stmt)).scalars()]
