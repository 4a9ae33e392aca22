"""The SQL of a leased row: its one status ``transition``, and the lease it is worked under.

A leased row (a datagen job, a training run, an evaluation run) has ``id``, ``status``,
``lease_owner``, ``lease_expires_at``, ``attempts``, ``cancel_requested``, ``created_at``,
``updated_at`` and ``finished_at`` columns. A worker claims a row by writing its owner id
(:func:`worker_identity`) and an expiry into the lease, renews it from a heartbeat while it
works, and releases it when it stops; a worker that dies leaves a lease that runs out, and the
orphan sweep (a Celery beat task) or a starting worker re-enqueues the row so another worker
takes it over. Every status change is one conditional ``UPDATE`` built here from the kind's
:class:`~chatpgt.orchestration.status.Lifecycle`, so a change the table does not allow matches
no row instead of overwriting what another process wrote.

Statements are Core, so they run on an async session (datagen) and a sync connection
(training) alike; times are this process's UTC clock, bound as parameters.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Update, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.db.base import utcnow
from chatpgt.orchestration.status import ACTIVE, TERMINAL, Lifecycle, RunStatus

now = utcnow


def worker_identity() -> str:
    """A lease owner id: ``host:pid:token`` (the host lets a worker tell its own leases)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def transition_stmt(
    model: Any,
    lifecycle: Lifecycle,
    row_id: int,
    target: str,
    *where: ColumnElement[bool],
    owner: str | None = None,
    **values: Any,
) -> Update:
    """``UPDATE <model> SET status=target, ...`` guarded by the lifecycle's transition table
    (and by ``owner`` holding the lease, when given). It returns the id of the row it changed,
    so an empty result means "not allowed now". A terminal target stamps ``finished_at`` and
    clears the lease."""
    at = now()
    sets: dict[str, Any] = {"status": str(target), "updated_at": at, **values}
    if target in TERMINAL:
        sets.setdefault("finished_at", at)
        sets.update(lease_owner=None, lease_expires_at=None)
    stmt = (
        update(model)
        .where(model.id == row_id, model.status.in_(lifecycle.sources_for(target)), *where)
        .values(**sets)
        .returning(model.id)
    )
    if owner is not None:
        stmt = stmt.where(model.lease_owner == owner)
    return stmt


async def transition(
    session: AsyncSession,
    model: Any,
    lifecycle: Lifecycle,
    row_id: int,
    target: str,
    *,
    owner: str | None = None,
    **values: Any,
) -> bool:
    """Run :func:`transition_stmt`; False when the row was not in a state that allows it."""
    stmt = transition_stmt(model, lifecycle, row_id, target, owner=owner, **values)
    return (await session.execute(stmt)).first() is not None


def cancel_queued_stmt(model: Any, lifecycle: Lifecycle, row_id: int, **values: Any) -> Update:
    """Cancel a row no worker has started (flagging it too); no row when it is not queued."""
    return transition_stmt(
        model,
        lifecycle,
        row_id,
        RunStatus.CANCELLED,
        model.status == RunStatus.QUEUED,
        cancel_requested=True,
        **values,
    )


def request_cancel_stmt(model: Any, row_id: int, statuses: Any = (RunStatus.RUNNING,)) -> Update:
    """Flag a row in ``statuses`` (running, by default) for cancel: its worker stops at its next
    heartbeat or step. Returns the id, no row when it is in another status."""
    return (
        update(model)
        .where(model.id == row_id, model.status.in_(list(statuses)))
        .values(cancel_requested=True, updated_at=now())
        .returning(model.id)
    )


def lease_free(model: Any, owner: str | None = None) -> ColumnElement[bool]:
    """Nobody holds the row's lease (never taken, or run out), or ``owner`` does."""
    conditions = [model.lease_expires_at.is_(None), model.lease_expires_at < now()]
    if owner is not None:
        conditions.append(model.lease_owner == owner)
    return or_(*conditions)


def take_lease_stmt(model: Any, row_id: int, owner: str, lease_s: float) -> Update:
    """Take the lease of an active row nobody else holds (counting an attempt); returns the
    row's status, no row when it is terminal or held by another live owner."""
    at = now()
    return (
        update(model)
        .where(model.id == row_id, model.status.in_(ACTIVE), lease_free(model, owner))
        .values(
            lease_owner=owner,
            lease_expires_at=at + timedelta(seconds=lease_s),
            attempts=model.attempts + 1,
            updated_at=at,
        )
        .returning(model.status)
    )


def renew_stmt(
    model: Any, row_id: int, owner: str, lease_s: float, *where: ColumnElement[bool]
) -> Update:
    """Extend ``owner``'s lease; returns the row's cancel flag, no row when the lease is no
    longer ours."""
    at = now()
    return (
        update(model)
        .where(model.id == row_id, model.lease_owner == owner, *where)
        .values(lease_expires_at=at + timedelta(seconds=lease_s), updated_at=at)
        .returning(model.cancel_requested)
    )


def release_stmt(model: Any, row_id: int, owner: str) -> Update:
    """Give the lease back at once, so a retry (or another worker) can resume the row."""
    return (
        update(model)
        .where(model.id == row_id, model.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


def orphans_stmt(model: Any) -> Select[Any]:
    """Running rows whose lease has run out: their worker died (or lost the database for longer
    than the lease) and nobody has taken them over. What the periodic sweep re-enqueues."""
    return (
        select(model.id)
        .where(model.status == RunStatus.RUNNING, model.lease_expires_at < now())
        .order_by(model.id)
    )


def recoverable_stmt(model: Any, queued_for_s: float, *columns: Any) -> Select[Any]:
    """What a starting worker re-enqueues: every running row, and rows queued for longer than
    ``queued_for_s`` (their message may be lost). Selects id, lease_expires_at, ``columns``."""
    at = now()
    return (
        select(model.id, model.lease_expires_at, *columns)
        .where(
            (model.status == RunStatus.RUNNING)
            | (
                (model.status == RunStatus.QUEUED)
                & (model.created_at < at - timedelta(seconds=queued_for_s))
            )
        )
        .order_by(model.id)
    )


def wait_until_free(expires: datetime | None, at: datetime | None = None) -> float:
    """Seconds until a lease expiring at ``expires`` runs out (0 when free or run out)."""
    if expires is None:
        return 0.0
    return max(0.0, (expires - (at or now())).total_seconds())


class LeaseLost(Exception):
    """Another worker took the work over (our lease ran out); stop without writing more."""
