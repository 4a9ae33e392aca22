"""``json``: the judge writes ``{"winner", "reasoning", "confidence"}``; an unparseable answer is
asked again (``judge_parse_retries``) and then fails the judgment — never a default winner."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any, ClassVar

from chatpgt.datagen.judges import base
from chatpgt.datagen.judges.base import JudgeCall, JudgmentItem
from chatpgt.datagen.judging import JudgeParseError, MatchupResult, combine, parse_verdict
from chatpgt.datagen.prompts import judge_messages
from chatpgt.db.base import utcnow


@base.register
class VerdictJson:
    name: ClassVar[str] = "json"

    async def judge(
        self, call: JudgeCall, j: JudgmentItem, prompt: str, text_a: str, text_b: str
    ) -> dict[str, Any] | None:
        req = call.request(judge_messages(prompt, text_a, text_b), json_mode=True)
        attempts, pt, ct, cost, saved = j.attempts, 0, 0, Decimal(0), Decimal(0)
        update = base.blank_result(j)
        for n in range(call.parse_retries + 1):
            # A parse retry is a new answer, not the cached one again (see chatpgt.datagen.cache).
            issued = await call.issue(replace(req, sample_index=n), None)
            if issued.stopped:
                return None
            if issued.skip is not None:
                update.update(status="skipped", error=f"not requested: {issued.skip}")
                break
            if issued.error is not None:
                error = issued.error
                attempts += error.attempts
                pt, ct = pt + error.prompt_tokens, ct + error.completion_tokens
                cost += error.cost_usd
                update.update(status="failed", error=error.message)
                break
            result = issued.result
            attempts += result.attempts
            pt, ct = pt + result.prompt_tokens, ct + result.completion_tokens
            cost += result.cost_usd
            saved += result.saved_usd
            if result.cache_hit:
                update.update(cache_hit=True)
            update.update(raw_answer=result.text[:20_000], latency_ms=result.latency_ms)
            try:
                parsed = parse_verdict(result.text)
            except JudgeParseError as exc:
                update.update(
                    status="failed",
                    error=(
                        f"unparseable judge answer after {attempts - j.attempts} attempt(s): {exc}"
                    ),
                )
                continue
            update.update(
                status="succeeded",
                error=None,
                winner=parsed.winner,
                winner_generation_id=base.winner_id(j, parsed.winner),
                reasoning=parsed.reasoning,
                confidence=parsed.confidence,
            )
            break
        update.update(
            attempts=attempts,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            saved_usd=saved,
            finished_at=utcnow(),
        )
        return update

    def combine(self, first: JudgmentItem, second: JudgmentItem | None) -> MatchupResult:
        return combine(base.verdict(first), base.verdict(second) if second else None)
