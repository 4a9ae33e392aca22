"""Statuses of leased work, and the transition table of each kind of it.

A datagen job and a training run share their statuses; they differ only in one transition (a
training run may go from running to running: a worker taking over a run whose lease expired).
Rounds runs and near-duplicate scans have a table each (the same moves as a datagen job).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from chatpgt.errors import InvalidState


class RunStatus(StrEnum):
    """The status of a leased unit of work (a datagen job, a training run)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ItemStatus(StrEnum):
    """The status of one work item of a job (a generation, a judgment)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
)
ACTIVE: frozenset[RunStatus] = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
ITEM_TERMINAL: frozenset[ItemStatus] = frozenset(
    {ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.SKIPPED, ItemStatus.CANCELLED}
)


@dataclass(frozen=True)
class Lifecycle:
    """The allowed status changes of one kind of leased work: ``transitions[src]`` are the
    statuses ``src`` may become. Terminal statuses allow nothing."""

    kind: str
    transitions: Mapping[RunStatus, frozenset[RunStatus]]

    def sources_for(self, target: str) -> frozenset[RunStatus]:
        """The statuses a row may be in to move to ``target``."""
        if target not in RunStatus.__members__.values():
            raise ValueError(f"unknown {self.kind} status {target!r}")
        return frozenset(s for s, nxt in self.transitions.items() if target in nxt)

    def allows(self, current: str, target: str) -> bool:
        return target in self.transitions.get(RunStatus(current), frozenset())

    def check(self, current: str, target: str) -> None:
        """Raise InvalidState (409) when ``current`` may not become ``target``."""
        if not self.allows(current, target):
            raise InvalidState(f"a {current} {self.kind} cannot become {target}")


_Q, _R, _S, _F, _C = (
    RunStatus.QUEUED,
    RunStatus.RUNNING,
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)
_DONE: frozenset[RunStatus] = frozenset()

DATAGEN_JOB = Lifecycle(
    "job",
    {_Q: frozenset({_R, _C, _F}), _R: frozenset({_S, _F, _C}), _S: _DONE, _F: _DONE, _C: _DONE},
)
# running -> running is a worker taking over a run whose lease expired.
TRAINING_RUN = Lifecycle(
    "training run",
    {_Q: frozenset({_R, _C, _F}), _R: frozenset({_R, _S, _F, _C}), _S: _DONE, _F: _DONE, _C: _DONE},
)

# A rounds run (chatpgt.rounds): queued until its first step, running while its rounds go on.
ROUNDS_RUN = Lifecycle(
    "rounds run",
    {_Q: frozenset({_R, _C, _F}), _R: frozenset({_S, _F, _C}), _S: _DONE, _F: _DONE, _C: _DONE},
)

# A near-duplicate scan (chatpgt.datasets.scans): one datagen-queue task from claim to the end;
# a worker taking over a scan whose lease ran out keeps it running (its claim changes no status).
DEDUP_SCAN = Lifecycle(
    "dedup scan",
    {_Q: frozenset({_R, _C, _F}), _R: frozenset({_S, _F, _C}), _S: _DONE, _F: _DONE, _C: _DONE},
)

for _lifecycle in (DATAGEN_JOB, TRAINING_RUN, ROUNDS_RUN, DEDUP_SCAN):
    assert frozenset(s for s, nxt in _lifecycle.transitions.items() if not nxt) == TERMINAL
