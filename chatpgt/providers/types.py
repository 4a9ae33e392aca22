"""What the rest of ChatPGT sees of a provider: a chat request in, a result or ProviderError out."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from chatpgt.redact import redact
from chatpgt.settings import Settings


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
    # Which of several answers to the very same request this is (a generator's sample, a
    # judge's parse retry). Never sent: it is part of the response cache's key, so that the
    # second sample is not served the first one's answer.
    sample_index: int = 0
    # Ask through the provider's Batch API (chatpgt.datagen.batches) instead of online.
    batch: bool = False


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
    # Served from the response cache: no request was made, tokens and cost are 0, and
    # ``saved_usd`` is what the answer cost when it was bought.
    cache_hit: bool = False
    saved_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class ABResult:
    """A pairwise verdict read from a model's next-token probabilities instead of its text.

    ``p_a`` and ``p_b`` are the probabilities the model gives to answering "A" and "B" (each
    summed over the token variants "A" and " A"), normalised so that ``p_a + p_b == 1``.
    ``mass`` is their sum before normalising: how much of the model's probability went to either
    letter at all (a low mass says the prompt did not make the model answer with a letter).
    ``completion_tokens`` is 0 for a local model (nothing is generated) and what the provider
    billed (usually 1) for an API model.
    """

    p_a: float
    p_b: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    latency_ms: int
    attempts: int
    mass: float = 1.0


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """How a ``local`` provider runs its models in this process (the same for every model).

    ``cache_dir``: where the bundled SmolLM2 alias is converted to safetensors (default
    ``~/.cache/chatpgt/models``). ``device``: a torch device string; None picks ``cuda`` when
    available, else ``cpu`` (bfloat16 on CUDA, float32 on CPU). ``max_batch_size``: the most
    requests one ``generate`` or forward pass takes. ``batch_wait_ms``: how long the first
    request of a batch waits for company when the model is idle. ``default_max_tokens``: the
    completion limit when a request sets no ``max_tokens``. ``torch_threads``: CPU threads for
    torch (None: the CPUs this process may run on).
    """

    cache_dir: Path | None = None
    device: str | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    default_max_tokens: int = 512
    torch_threads: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalOptions:
        """The options the settings' ``CHATPGT_LOCAL_*`` (and model cache) give."""
        return cls(
            cache_dir=settings.model_cache_dir,
            device=settings.local_device,
            max_batch_size=settings.local_max_batch_size,
            batch_wait_ms=settings.local_batch_wait_ms,
            default_max_tokens=settings.local_default_max_tokens,
            torch_threads=settings.local_torch_threads,
        )

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.batch_wait_ms < 0:
            raise ValueError("batch_wait_ms must not be negative")
        if self.default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError("torch_threads must be at least 1")


class ProviderError(Exception):
    """A request that did not produce an answer, after the retries the provider allows.

    ``message`` is safe to store and show: it is passed through :func:`chatpgt.redact.redact`
    here, whoever builds the error, so a key that a provider echoes, or that an exception carries
    in a URL or header, becomes ``[REDACTED]``.
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
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.attempts = attempts
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost_usd = cost_usd
