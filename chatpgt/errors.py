"""The typed failures of ChatPGT. The API maps each to one problem+json status, once."""

from __future__ import annotations

from typing import Any


class ChatPGTError(Exception):
    status_code = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(ChatPGTError):
    status_code = 404
    title = "Not found"


class Conflict(ChatPGTError):
    status_code = 409
    title = "Conflict"


class InvalidState(ChatPGTError):
    status_code = 409
    title = "Invalid state"


class InvalidInput(ChatPGTError):
    """Input that passed schema validation but cannot be acted on (unknown provider, bad file)."""

    status_code = 400
    title = "Bad request"


class PayloadTooLarge(ChatPGTError):
    status_code = 413
    title = "Payload too large"


class BudgetExceeded(ChatPGTError):
    status_code = 402
    title = "Budget exceeded"
