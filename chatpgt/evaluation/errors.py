"""Evaluation failures a caller can act on; each maps to one problem+json status in the API."""

from __future__ import annotations

from chatpgt.errors import InvalidInput, InvalidState, NotFound


class EvalRunNotFound(NotFound):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"Evaluation run {run_id} does not exist.", run_id=run_id)


class UnknownEvalModel(InvalidInput):
    """A model that is no registry id or name, no local model directory and no hub id."""


class NoStoredSplit(InvalidInput):
    """No SFT run of the lineage stored its essay split: nothing is known to be held out."""


class EmptyHeldOut(InvalidInput):
    """Every essay of the split was trained on by some model of the lineage."""


class JudgeUnavailable(InvalidInput):
    """A judge on an unknown provider, or on one whose key is not set."""


class NoOtherEssays(InvalidInput):
    """The style classifier has no other-writer essays to learn from."""


class EvalNotCancellable(InvalidState):
    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(
            f"Evaluation run {run_id} is {status} and can no longer be cancelled.",
            run_id=run_id,
            run_status=status,
        )


class ReportNotReady(InvalidState):
    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(
            f"Evaluation run {run_id} is {status}: it has no report yet.",
            run_id=run_id,
            run_status=status,
        )
