"""Allowed state changes of a datagen job, and the terminal states of a work item."""

from __future__ import annotations

from chatpgt.errors import InvalidState

JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
JOB_TERMINAL = frozenset(s for s, nxt in JOB_TRANSITIONS.items() if not nxt)
JOB_ACTIVE = frozenset({"queued", "running"})

ITEM_TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


def sources_for(target: str) -> frozenset[str]:
    """The states a job may be in to move to ``target``."""
    return frozenset(s for s, nxt in JOB_TRANSITIONS.items() if target in nxt)


def check_transition(current: str, target: str) -> None:
    if target not in JOB_TRANSITIONS.get(current, frozenset()):
        raise InvalidState(f"a {current} job cannot become {target}")
