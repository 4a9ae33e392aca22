"""Strict parsing of a judge's answer, and combining the two verdicts of a matchup."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from chatpgt.providers.ab import confidence_from_ab, debiased_first_wins

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class JudgeParseError(ValueError):
    """The judge's answer is not the JSON object asked for; the caller retries or fails the row."""


@dataclass(frozen=True, slots=True)
class ParsedVerdict:
    winner: str  # "A" or "B"
    reasoning: str
    confidence: int


EXCERPT_CHARS = 200
_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number"}


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first ``limit`` characters of an answer on one line, for an error message: line
    breaks, NUL and lone surrogates (which no error column can store) are written as escapes."""
    head = text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    for char, escape in (("\x00", "\\x00"), ("\n", "\\n"), ("\r", "\\r")):
        head = head.replace(char, escape)
    return head + ("…" if len(text) > limit else "")


def parse_verdict(content: str) -> ParsedVerdict:
    """Parse ``{"winner": "A"|"B", "reasoning": str, "confidence": 1..10}``.

    Only a JSON object (optionally inside one markdown code fence) is accepted. Anything else
    raises JudgeParseError: an unreadable answer never becomes a winner. The error says what the
    answer lacked or held, and quotes its first 200 characters.
    """
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if not text:
        raise JudgeParseError("empty answer")
    try:
        data: Any = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        reason = exc.msg.removesuffix(" at")
        raise _unparseable(f"not JSON ({reason} at char {exc.pos})", content) from None
    except RecursionError:
        # Thousands of nested brackets: as unreadable as any other non-verdict, never a crash.
        raise _unparseable("not JSON (nested too deeply)", content) from None
    except JudgeParseError as exc:
        raise _unparseable(str(exc), content) from None
    if not isinstance(data, dict):
        kind = "null" if data is None else _JSON_KINDS.get(type(data), type(data).__name__)
        raise _unparseable(f"not a JSON object but {kind}", content)
    winner = _field(data, "winner", content)
    if not isinstance(winner, str) or winner.strip().upper() not in ("A", "B"):
        shown = json.dumps(winner, ensure_ascii=False)[:50]
        raise _unparseable(f'"winner" must be "A" or "B", got {shown}', content)
    reasoning = _field(data, "reasoning", content)
    if not isinstance(reasoning, str) or not reasoning.strip():
        raise _unparseable('"reasoning" is empty or not a string', content)
    confidence = _field(data, "confidence", content)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        shown = json.dumps(confidence, ensure_ascii=False)[:50]
        raise _unparseable(f'"confidence" must be an integer, got {shown}', content)
    # 1e400 parses as infinity, which int() cannot take: a range check first, then integrality.
    if not math.isfinite(confidence) or not 1 <= confidence <= 10 or confidence != int(confidence):
        raise _unparseable(
            f'"confidence" must be an integer from 1 to 10, got {confidence!r}', content
        )
    return ParsedVerdict(winner.strip().upper(), reasoning.strip(), int(confidence))


def _field(data: dict[str, Any], key: str, content: str) -> Any:
    if key not in data:
        keys = ", ".join(json.dumps(k, ensure_ascii=False) for k in list(data)[:10]) or "none"
        raise _unparseable(f'no "{key}" key (the object has: {keys})', content)
    return data[key]


def _unparseable(what: str, content: str) -> JudgeParseError:
    return JudgeParseError(f"{what}; the answer: {excerpt(content.strip())}")


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which no verdict can carry.
    raise JudgeParseError(f"not JSON ({name} is not a JSON value)")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One succeeded judgment: which generation won when ``a_id`` was shown as essay A."""

    judgment_id: int
    a_id: int
    b_id: int
    winner_id: int
    confidence: int
    reasoning: str

    @property
    def loser_id(self) -> int:
        return self.b_id if self.winner_id == self.a_id else self.a_id

    def as_json(self, order: str) -> dict[str, Any]:
        return {
            "judgment_id": self.judgment_id,
            "order": order,
            "winner_generation_id": self.winner_id,
            "confidence": self.confidence,
            "reasoning": self.reasoning,
        }


@dataclass(frozen=True, slots=True)
class MatchupResult:
    """The result of one matchup: a decisive win, or a tie when the two orders disagree."""

    winner_id: int | None
    loser_id: int | None
    confidence: float | None
    reasoning: str
    verdicts: tuple[Verdict, ...]

    @property
    def is_tie(self) -> bool:
        return self.winner_id is None


def combine_probabilities(
    first: Verdict, p_first_a: float, second: Verdict, p_second_a: float
) -> MatchupResult:
    """Combine two probability verdicts (``p_*_a``: the probability the judge gave to "A").

    The probability that ``first.a_id`` is the better essay is averaged over the two orders
    (shown as A in ``first``, as B in ``second``), which cancels a judge's bias for a position.
    The confidence comes from that average (see confidence_from_ab); exactly 0.5 is a tie.
    """
    p_first_wins = debiased_first_wins(p_first_a, p_second_a)
    if p_first_wins == 0.5:
        return MatchupResult(None, None, None, "", (first, second))
    winner, loser = (first.a_id, first.b_id) if p_first_wins > 0.5 else (first.b_id, first.a_id)
    _, confidence = confidence_from_ab(p_first_wins, 1.0 - p_first_wins)
    reasoning = (
        f"order-averaged probability that the chosen essay is better: "
        f"{max(p_first_wins, 1 - p_first_wins):.3f}"
    )
    return MatchupResult(winner, loser, float(confidence), reasoning, (first, second))


def combine(first: Verdict, second: Verdict | None) -> MatchupResult:
    """Combine the A/B verdict with the B/A verdict (None when only one order is judged).

    Agreeing verdicts win with the mean confidence; disagreeing verdicts are a tie.
    """
    if second is None:
        return MatchupResult(
            first.winner_id, first.loser_id, float(first.confidence), first.reasoning, (first,)
        )
    if first.winner_id != second.winner_id:
        return MatchupResult(None, None, None, "", (first, second))
    confidence = (first.confidence + second.confidence) / 2
    reasoning = first.reasoning if first.confidence >= second.confidence else second.reasoning
    return MatchupResult(first.winner_id, first.loser_id, confidence, reasoning, (first, second))
