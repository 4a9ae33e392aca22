"""What every kind of leased run does the same way through its rows: the API side's cancel, and
the worker side's claim (take the lease, move a queued row to running).

The kind passes its model (a :class:`~chatpgt.orchestration.models.LeasedRun`), its
:class:`~chatpgt.orchestration.status.Lifecycle` and its own errors; the SQL is
:mod:`chatpgt.orchestration.leases`'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.errors import InvalidState
from chatpgt.orchestration import leases
from chatpgt.orchestration.status import TERMINAL, Lifecycle, RunStatus

log = logging.getLogger(__name__)


async def cancel(
    session: AsyncSession,
    model: Any,
    lifecycle: Lifecycle,
    row_id: int,
    *,
    not_found: Callable[[int], Exception],
    not_cancellable: Callable[[int, str], Exception],
    **queued_values: Any,
) -> None:
    """Cancel a leased row: a queued one at once (writing ``queued_values`` too), a running one
    at its worker's next heartbeat (flagged). Cancelling a cancelled row changes nothing; any
    other finished row raises ``not_cancellable``, a missing one ``not_found``."""
    row = await session.get(model, row_id, populate_existing=True)
    if row is None:
        raise not_found(row_id)
    if row.status in TERMINAL:
        if row.status != RunStatus.CANCELLED:
            raise not_cancellable(row_id, row.status)
        return
    queued = leases.cancel_queued_stmt(model, lifecycle, row_id, **queued_values)
    if (await session.execute(queued)).first() is not None:
        return
    if (await session.execute(leases.request_cancel_stmt(model, row_id))).first() is not None:
        return
    # It finished between our read and our writes.
    row = await session.get(model, row_id, populate_existing=True)
    if row is not None and row.status != RunStatus.CANCELLED:
        raise not_cancellable(row_id, row.status)


@dataclass(frozen=True, slots=True)
class Taken:
    """What taking a row's lease came to: ``was`` is the status the row had when this owner
    took it (queued: a first start, running: a take-over), None when it was not taken; ``row``
    is the row as read after (None when there is no such row)."""

    row: Any | None
    was: str | None

    @property
    def refused(self) -> str:
        """Why it was not taken: "missing", the row's terminal status, or "busy" (another live
        owner holds it)."""
        if self.row is None:
            return "missing"
        return str(self.row.status) if self.row.status in TERMINAL else "busy"


async def take(session: AsyncSession, model: Any, row_id: int, owner: str, lease_s: float) -> Taken:
    """Take the lease of an active row nobody else holds (counting an attempt), and read it."""
    was = (
        await session.execute(leases.take_lease_stmt(model, row_id, owner, lease_s))
    ).scalar_one_or_none()
    row = await session.get(model, row_id, populate_existing=True)
    return Taken(row=row, was=None if row is None else was)


async def start(
    session: AsyncSession, model: Any, lifecycle: Lifecycle, row_id: int, owner: str
) -> None:
    """Move a row whose lease ``owner`` just took from queued to running (``started_at``)."""
    stmt = leases.transition_stmt(
        model, lifecycle, row_id, RunStatus.RUNNING, owner=owner, started_at=leases.now()
    )
    if (await session.execute(stmt)).first() is None:
        raise InvalidState(f"{model.__tablename__} {row_id} changed state while being claimed")


async def claim(
    session: AsyncSession, model: Any, lifecycle: Lifecycle, row_id: int, owner: str, lease_s: float
) -> str:
    """Take the lease and start a queued row: "claimed", or why not (:attr:`Taken.refused`)."""
    taken = await take(session, model, row_id, owner, lease_s)
    if taken.was is None:
        return taken.refused
    if taken.was == RunStatus.QUEUED:
        await start(session, model, lifecycle, row_id, owner)
    return "claimed"


@dataclass(frozen=True, slots=True)
class LeasedKind:
    """One kind of leased row, for the calls above: its model, lifecycle and the errors its
    API answers with (not found: 404; not cancellable: 409)."""

    model: Any
    lifecycle: Lifecycle
    not_found: Callable[[int], Exception]
    not_cancellable: Callable[[int, str], Exception]

    async def cancel(self, session: AsyncSession, row_id: int, **queued_values: Any) -> None:
        """:func:`cancel` of a row of this kind."""
        await cancel(
            session,
            self.model,
            self.lifecycle,
            row_id,
            not_found=self.not_found,
            not_cancellable=self.not_cancellable,
            **queued_values,
        )


async def give_back(
    sessions: async_sessionmaker[AsyncSession], model: Any, row_id: int, owner: str, label: str
) -> None:
    """Release ``owner``'s lease at once (the work stopped on an error), so a retry or another
    worker resumes the row now; when the database is what failed, the lease just runs out."""
    try:
        async with sessions() as session, session.begin():
            await session.execute(leases.release_stmt(model, row_id, owner))
    except Exception:
        log.exception("%s: could not release the lease", label)


# --- the worker side of a gpu-queue row (sync: training, evaluation, generation requests) ------


class LeasedSnapshot(Protocol):
    """What :func:`claim_sync` reads of a row (a kind's frozen snapshot)."""

    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def lease_expired(self) -> bool: ...


class SyncLeasedStore(Protocol):
    """What :func:`claim_sync` needs of a kind's sync store (``training.repository.RunStore``
    and the stores built on it)."""

    def claim(self, run_id: int, owner: str, lease_s: float, max_attempts: int) -> bool: ...

    def finish(self, run_id: int, owner: str | None, status: str, **values: Any) -> bool: ...


def claim_sync(
    store: SyncLeasedStore,
    read: Callable[[int], LeasedSnapshot | None],
    row_id: int,
    owner: str,
    lease_s: float,
    max_attempts: int,
    gave_up: str = "the worker stopped during each one",
) -> str:
    """Take a row's lease for ``owner``: "claimed", or what stands in the way ("missing",
    "finished", "busy"). A row whose lease ran out after ``max_attempts`` attempts fails
    ("failed"), with the error "gave up after N attempts: ``gave_up``"."""
    snapshot = read(row_id)
    if snapshot is None:
        return "missing"
    if snapshot.status in TERMINAL:
        return "finished"
    if store.claim(row_id, owner, lease_s, max_attempts):
        return "claimed"
    snapshot = read(row_id)
    if snapshot is None:
        return "missing"
    if snapshot.status in TERMINAL:
        return "finished"
    if snapshot.lease_expired and snapshot.attempts >= max_attempts:
        store.finish(
            row_id,
            None,
            RunStatus.FAILED,
            error=f"gave up after {snapshot.attempts} attempts: {gave_up}",
        )
        return RunStatus.FAILED
    return "busy"
