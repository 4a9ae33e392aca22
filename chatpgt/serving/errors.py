"""Failures of the serving domain a caller can act on (each one problem+json status)."""

from __future__ import annotations

from chatpgt.errors import InvalidInput, InvalidState, NotFound


class RegisteredModelNotFound(NotFound):
    def __init__(self, ref: str | int) -> None:
        super().__init__(f"No registered model matches {str(ref)!r}.", model=str(ref))


class ModelFolderMissing(InvalidState):
    """A registered model whose folder is not on this machine (a hub base, or deleted)."""


class GenerationRequestNotFound(NotFound):
    def __init__(self, request_id: int) -> None:
        super().__init__(f"Generation request {request_id} does not exist.", request_id=request_id)


class InvalidGeneration(InvalidInput):
    """Settings a generation cannot run with (too long for the model, no title or messages)."""
