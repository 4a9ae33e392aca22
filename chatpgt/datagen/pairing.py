"""Pairing: which decided matchups of a topic become preference pairs, and their rows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from itertools import combinations
from typing import Any, Protocol

from chatpgt.datagen.judges.base import JudgeMethod, JudgmentItem
from chatpgt.datagen.judging import MatchupResult
from chatpgt.datagen.models import Generation


class TopicView(Protocol):
    """What a pair row needs of its topic."""

    topic_id: int
    title: str
    prompt: str
    reference_text: str | None


class PairingRule(StrEnum):
    BEST_VS_WORST = "best_vs_worst"
    ALL_PAIRS = "all_pairs"


def matchups(candidate_ids: Iterable[int]) -> list[tuple[int, int]]:
    """Every unordered matchup among a topic's candidates, as (lower id, higher id)."""
    return list(combinations(sorted(candidate_ids), 2))


def select_pairs(
    rule: PairingRule, candidate_ids: list[int], outcomes: Mapping[tuple[int, int], MatchupResult]
) -> list[MatchupResult]:
    """The decided outcomes that become pairs (chosen = winner, rejected = loser).

    ``outcomes`` is keyed by (lower id, higher id); a matchup missing from it was not decided
    (a judgment failed) and is never turned into a pair.

    - ``all_pairs``: every decisive matchup.
    - ``best_vs_worst``: rank candidates by decisive wins (then by summed winning confidence, then
      by id, for a stable order); one pair, best over worst, made only when their own matchup was
      decided in the best candidate's favour. A tie or an undecided matchup gives no pair.
    """
    decisive = [o for o in outcomes.values() if not o.is_tie]
    if rule is PairingRule.ALL_PAIRS:
        return sorted(decisive, key=lambda o: (o.winner_id or 0, o.loser_id or 0))
    if len(candidate_ids) < 2:
        return []
    wins = {c: 0 for c in candidate_ids}
    strength = {c: 0.0 for c in candidate_ids}
    for o in decisive:
        assert o.winner_id is not None and o.confidence is not None
        if o.winner_id in wins:
            wins[o.winner_id] += 1
            strength[o.winner_id] += o.confidence
    ranked = sorted(candidate_ids, key=lambda c: (-wins[c], -strength[c], c))
    best, worst = ranked[0], ranked[-1]
    outcome = outcomes.get((min(best, worst), max(best, worst)))
    if outcome is None or outcome.is_tie or outcome.winner_id != best:
        return []
    return [outcome]


CORPUS_REASONING = "The original essay from the corpus is preferred to a generated essay."


def decided_matchups(
    method: JudgeMethod,
    judgments: Iterable[JudgmentItem],
    candidates: Iterable[int],
    *,
    both_orders: bool,
) -> dict[tuple[int, int], MatchupResult]:
    """The result of every matchup among ``candidates`` whose verdicts are in, keyed by (lower
    id, higher id). A failed verdict decides nothing; with ``both_orders``, both must be in."""
    by_order = {
        (j.generation_a_id, j.generation_b_id): j for j in judgments if j.status == "succeeded"
    }
    results: dict[tuple[int, int], MatchupResult] = {}
    for low, high in matchups(candidates):
        first = by_order.get((low, high))
        second = by_order.get((high, low))
        if first is None or (both_orders and second is None):
            continue
        results[(low, high)] = method.combine(first, second)
    return results


def judged_pair_row(
    job_id: int,
    topic: TopicView,
    result: MatchupResult,
    gens: Mapping[int, Generation],
    judge_model: str,
) -> dict[str, Any]:
    """The pair row of a decided matchup: the winner chosen over the loser."""
    assert result.winner_id is not None and result.loser_id is not None
    assert result.confidence is not None
    win, lose = gens[result.winner_id], gens[result.loser_id]
    return {
        "job_id": job_id,
        "topic_id": topic.topic_id,
        "source": "judged",
        "topic": topic.title,
        "prompt": topic.prompt,
        "chosen": win.text,
        "rejected": lose.text,
        "chosen_model": win.model,
        "rejected_model": lose.model,
        "chosen_generation_id": win.id,
        "rejected_generation_id": lose.id,
        "judgment_reasoning": result.reasoning,
        "confidence": result.confidence,
        "judge_model": judge_model,
        "judgment_ids": [v.judgment_id for v in result.verdicts],
        "verdicts": [
            v.as_json(order) for v, order in zip(result.verdicts, ("AB", "BA"), strict=False)
        ],
    }


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def cut_to_length(text: str, words: int) -> str:
    """The start of ``text`` with about ``words`` words: cut at the first sentence end at or
    after ``words`` words (within a quarter more), else at ``words`` words. Paragraph breaks
    before the cut are kept."""
    tokens = list(re.finditer(r"\S+", text))
    if len(tokens) <= words:
        return text
    end = max(words, 1)
    for i in range(end - 1, min(len(tokens), end + max(words // 4, 1))):
        if _SENTENCE_END.search(tokens[i].group()):
            end = i + 1
            break
    return text[: tokens[end - 1].end()]


def corpus_pair_rows(
    job_id: int,
    topic: TopicView,
    ok: Iterable[Generation],
    confidence: float,
    *,
    match_length: bool = True,
) -> list[dict[str, Any]]:
    """The corpus essay chosen over each generated essay (none when the topic has none).

    ``match_length``: the corpus essay is cut to the generated essay's length (at a sentence
    end), so that the pair teaches the author's style rather than "longer is better": a real
    essay is thousands of words, a generated one a few hundred.
    """
    if not topic.reference_text:
        return []
    return [
        {
            "job_id": job_id,
            "topic_id": topic.topic_id,
            "source": "corpus",
            "topic": topic.title,
            "prompt": topic.prompt,
            "chosen": cut_to_length(topic.reference_text, len((g.text or "").split()))
            if match_length
            else topic.reference_text,
            "rejected": g.text,
            "chosen_model": "corpus",
            "rejected_model": g.model,
            "chosen_generation_id": None,
            "rejected_generation_id": g.id,
            "judgment_reasoning": CORPUS_REASONING,
            "confidence": confidence,
            "judge_model": None,
            "judgment_ids": [],
            "verdicts": [],
        }
        for g in ok
    ]
