"""The interface of a judging method, and what every method shares.

A method judges one ordered matchup (essay A, essay B) into a judgment row's result columns,
and combines the verdicts of a matchup's two orders into a :class:`MatchupResult`. It makes its
request through :attr:`JudgeCall.issue`, which keeps it within the job's budget and says when
the job is stopping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from chatpgt.datagen.judging import MatchupResult, Verdict
from chatpgt.providers.types import ChatRequest, ProviderError

# Skip reasons that stop the job: the item is left for the finish step (marked cancelled).
# Asked in a provider batch (chatpgt.datagen.batches) whose answer is not in yet.
WAITING_FOR_BATCH = "waiting_for_batch"
STOPPING = frozenset({"cancelled", "max_failure_rate", WAITING_FOR_BATCH})


@dataclass(frozen=True, slots=True)
class Issued:
    """What one request came to: its result, its provider error, or why it was not made."""

    result: Any = None
    error: ProviderError | None = None
    skip: str | None = None

    @property
    def stopped(self) -> bool:
        """Not made because the job is stopping, or asked in a provider batch whose answer is
        not in yet: leave the item as it is."""
        return self.skip in STOPPING


class JudgeSpec(Protocol):
    """What a method reads of the judge's spec (``chatpgt.datagen.schemas.JudgeSpec``, which
    imports this package for the method names: the methods never import the schemas back)."""

    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def min_letter_mass(self) -> float: ...
    @property
    def temperature(self) -> float: ...
    @property
    def max_tokens(self) -> int: ...
    @property
    def mode(self) -> str: ...


Call = Callable[[ChatRequest], Awaitable[Any]]
Issue = Callable[[ChatRequest, Call | None], Awaitable[Issued]]


@dataclass(frozen=True, slots=True)
class JudgeCall:
    """What a method needs to judge: the judge's spec, the model to ask (a registered model's
    path for a local provider), how to make a request (``issue(request, call)``; ``call`` is
    ``pool.chat`` when None), the pool's A/B probability call, and parse retries."""

    spec: JudgeSpec
    model: str
    issue: Issue
    judge_ab: Call
    parse_retries: int

    def request(self, messages: list[dict[str, str]], **overrides: Any) -> ChatRequest:
        """A request to the judge with its temperature and max_tokens unless overridden."""
        values: dict[str, Any] = {
            "temperature": self.spec.temperature,
            "max_tokens": self.spec.max_tokens,
            **overrides,
        }
        return ChatRequest(
            provider=self.spec.provider,
            model=self.model,
            messages=messages,
            batch=self.spec.mode == "batch",
            **values,
        )


@dataclass(slots=True)
class JudgmentItem:
    """A judgment row as the runner works on it (lighter than an ORM object)."""

    id: int
    topic_id: int
    generation_a_id: int
    generation_b_id: int
    status: str
    attempts: int
    winner: str | None = None
    winner_generation_id: int | None = None
    confidence: int | None = None
    reasoning: str | None = None
    cost_usd: Decimal = Decimal(0)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int | None = None
    raw_answer: str | None = None
    finished_at: datetime | None = None
    cache_hit: bool = False
    saved_usd: Decimal = Decimal(0)


class JudgeMethod(Protocol):
    name: ClassVar[str]

    async def judge(
        self, call: JudgeCall, j: JudgmentItem, prompt: str, text_a: str, text_b: str
    ) -> dict[str, Any] | None:
        """The judgment's result columns (see :func:`blank_result`), or None when the job is
        stopping and the request was not made."""

    def combine(self, first: JudgmentItem, second: JudgmentItem | None) -> MatchupResult:
        """The matchup's result from its succeeded judgment(s): ``first`` shows the lower
        generation id as A, ``second`` (None when only one order is judged) the other way."""


_METHODS: dict[str, JudgeMethod] = {}


def register(method: type[Any]) -> type[Any]:
    """Class decorator: make a method available under its ``name``."""
    if method.name in _METHODS:
        raise ValueError(f"two judging methods are named {method.name!r}")
    _METHODS[method.name] = method()
    return method


def judge_method(name: str) -> JudgeMethod:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown judging method {name!r}") from None


def method_names() -> list[str]:
    return sorted(_METHODS)


# The judge's provider and model of a method that asks no provider (``needs_provider = False``
# on its class): the request leaves them out, the rows and pairs name this.
BUILTIN_PROVIDER = "builtin"


def needs_provider(name: str) -> bool:
    """Whether method ``name`` asks a provider (a method class may say ``needs_provider =
    False``: then the job's judge names no provider and no key is checked)."""
    return bool(getattr(judge_method(name), "needs_provider", True))


def blank_result(j: JudgmentItem) -> dict[str, Any]:
    """Every result column (the batch update writes them all), as for a request not made."""
    return {
        "status": j.status,
        "error": None,
        "attempts": j.attempts,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": Decimal(0),
        "latency_ms": None,
        "raw_answer": None,
        "winner": None,
        "winner_generation_id": None,
        "reasoning": None,
        "confidence": None,
        "finished_at": None,
        "cache_hit": False,
        "saved_usd": Decimal(0),
    }


def verdict(j: JudgmentItem) -> Verdict:
    """A succeeded judgment as a verdict."""
    assert j.winner_generation_id is not None and j.confidence is not None
    return Verdict(
        j.id,
        j.generation_a_id,
        j.generation_b_id,
        j.winner_generation_id,
        j.confidence,
        j.reasoning or "",
    )


def winner_id(j: JudgmentItem, letter: str) -> int:
    return j.generation_a_id if letter == "A" else j.generation_b_id
