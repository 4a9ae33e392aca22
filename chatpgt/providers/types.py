"""What the rest of ChatPGT sees of a provider: a chat request in, a result or ProviderError out."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class ChatRequest:
    provider: str
    model: str
    messages: list[dict[str, str]]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    # Ask for a JSON object (response_format) where the provider supports it.
    json_mode: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    latency_ms: int
    finish_reason: str | None
    attempts: int
    # The choice's logprobs.content list when the request asked for logprobs (extra={"logprobs":
    # True}) and the provider returned them; None otherwise.
    logprobs: list[dict[str, Any]] | None = None


class ProviderError(Exception):
    """A request that did not produce an answer, after the retries the provider allows.

    ``message`` is safe to store and show: it never contains a key or request headers.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        attempts: int = 1,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: Decimal = Decimal(0),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.attempts = attempts
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost_usd = cost_usd
