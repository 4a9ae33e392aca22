"""The life of a training run, as one table of allowed transitions.

Every status change of a ``training_runs`` row is a conditional UPDATE built by
:func:`transition_stmt`, so a change that the table does not allow matches no row instead of
overwriting a state another process wrote (a cancelled run is never turned back into a running one).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import ColumnElement, Update, update

from chatpgt.db.base import utcnow
from chatpgt.training.models import TrainingRun

QUEUED: Final = "queued"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

STATUSES: Final = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})

# from -> allowed targets. running -> running is a worker taking over a run whose lease expired.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def allowed_sources(target: str) -> list[str]:
    """The statuses a run may be in for a change to ``target`` to be allowed."""
    if target not in TRANSITIONS:
        raise ValueError(f"unknown training run status {target!r}")
    return [source for source, targets in TRANSITIONS.items() if target in targets]


def can_transition(source: str, target: str) -> bool:
    return target in TRANSITIONS.get(source, frozenset())


def transition_stmt(
    run_id: int, target: str, *where: ColumnElement[bool], table: Any = TrainingRun, **values: Any
) -> Update:
    """``UPDATE training_runs SET status=target, ...`` guarded by the transition table.

    ``table`` is the ORM class of the rows (evaluation runs share this life and table of
    transitions).

    ``where`` adds conditions (a lease owner, an expired lease); ``values`` sets more columns. The
    statement returns the id of the row it changed, so an empty result means "not allowed now".
    Times are this process's UTC clock (as for every lease), bound as parameters.
    """
    now = utcnow()
    stmt = (
        update(table)
        .where(table.id == run_id, table.status.in_(allowed_sources(target)), *where)
        .values(status=target, updated_at=now, **values)
        .returning(table.id)
    )
    if target in TERMINAL:
        stmt = stmt.values(finished_at=now, lease_owner=None, lease_expires_at=None)
    return stmt
