"""``ab_probability``: one forward pass (or a one-token completion with logprobs); the verdict
is the letter with the higher probability, the confidence comes from their ratio. A judge that
puts almost no probability on either letter (``min_letter_mass``) fails the judgment rather than
decide it. The two orders combine by averaging the probability, which cancels a position bias."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from chatpgt.datagen.judges.base import JudgeCall, JudgmentItem, blank_result, register
from chatpgt.datagen.judges.base import verdict as verdict_of
from chatpgt.datagen.judges.base import winner_id as winner_of
from chatpgt.datagen.judging import MatchupResult, combine, combine_probabilities
from chatpgt.datagen.prompts import judge_messages
from chatpgt.db.base import utcnow
from chatpgt.providers.ab import confidence_from_ab
from chatpgt.providers.types import ABResult


@register
class ABProbability:
    name: ClassVar[str] = "ab_probability"

    async def judge(
        self, call: JudgeCall, j: JudgmentItem, prompt: str, text_a: str, text_b: str
    ) -> dict[str, Any] | None:
        judge = call.spec
        messages = judge_messages(prompt, text_a, text_b, one_letter=True)
        req = call.request(messages, temperature=0.0, max_tokens=1)
        update = blank_result(j)
        issued = await call.issue(req, call.judge_ab)
        if issued.stopped:
            return None
        if issued.skip is not None:
            update.update(status="skipped", error=f"not requested: {issued.skip}")
        elif issued.error is not None:
            update.update(
                status="failed",
                error=issued.error.message,
                attempts=j.attempts + issued.error.attempts,
                cost_usd=issued.error.cost_usd,
            )
        else:
            ab: ABResult = issued.result
            raw = {"p_a": round(ab.p_a, 6), "p_b": round(ab.p_b, 6), "mass": round(ab.mass, 6)}
            update.update(
                attempts=j.attempts + ab.attempts,
                prompt_tokens=ab.prompt_tokens,
                completion_tokens=ab.completion_tokens,
                cost_usd=ab.cost_usd,
                latency_ms=ab.latency_ms,
                raw_answer=json.dumps(raw),
            )
            if ab.mass < judge.min_letter_mass:
                message = (
                    f"the judge put {ab.mass:.3f} of its probability on A or B "
                    f"(min_letter_mass {judge.min_letter_mass})"
                )
                update.update(status="failed", error=message)
            else:
                letter, confidence = confidence_from_ab(ab.p_a, ab.p_b)
                update.update(
                    status="succeeded",
                    winner=letter,
                    winner_generation_id=winner_of(j, letter),
                    confidence=confidence,
                    reasoning=(
                        f"next-token probabilities A {ab.p_a:.3f}, B {ab.p_b:.3f} "
                        f"(letter mass {ab.mass:.3f})"
                    ),
                )
        update["finished_at"] = utcnow()
        return update

    def combine(self, first: JudgmentItem, second: JudgmentItem | None) -> MatchupResult:
        if second is None:
            return combine(verdict_of(first), None)
        return combine_probabilities(
            verdict_of(first), _p_a(first), verdict_of(second), _p_a(second)
        )


def _p_a(j: JudgmentItem) -> float:
    """The probability the judge gave to "A" (kept in the judgment's raw answer)."""
    return float(json.loads(j.raw_answer or "{}")["p_a"])
