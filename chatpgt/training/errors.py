"""Training failures a caller can act on; each maps to one problem+json status in the API."""

from __future__ import annotations

from chatpgt.errors import InvalidInput, InvalidState, NotFound


class TrainingRunNotFound(NotFound):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"Training run {run_id} does not exist.", run_id=run_id)


class ModelNotFound(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No registered model or finished SFT run matches {ref!r}.", model=ref)


class InvalidModelSource(InvalidInput):
    """A base or starting model that cannot be used: missing local path, unfinished run."""


class CorpusUnreadable(InvalidInput):
    """A local corpus path that is missing, of an unknown kind, or without title and text."""


class NoPairsSelected(InvalidInput):
    """The pair selection of a DPO request matches no pair."""


class UnsupportedDistribution(InvalidInput):
    """More training processes than the workers have devices, or FSDP where it cannot run."""


class RunNotCancellable(InvalidState):
    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(
            f"Training run {run_id} is {status} and can no longer be cancelled.",
            run_id=run_id,
            run_status=status,  # not 'status': that is the problem's HTTP status
        )


class TrainingDataError(Exception):
    """Raised in the worker when the data cannot be trained on; the run fails with this message."""


class RankFailed(Exception):
    """A process (rank) of a multi-process run died or raised; the run fails with this message."""
