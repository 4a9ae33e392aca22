"""Pairing rules: which decided matchups of a topic become preference pairs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from itertools import combinations

from chatpgt.datagen.judging import Outcome


class PairingRule(StrEnum):
    BEST_VS_WORST = "best_vs_worst"
    ALL_PAIRS = "all_pairs"


def matchups(candidate_ids: Iterable[int]) -> list[tuple[int, int]]:
    """Every unordered matchup among a topic's candidates, as (lower id, higher id)."""
    return list(combinations(sorted(candidate_ids), 2))


def select_pairs(
    rule: PairingRule, candidate_ids: list[int], outcomes: Mapping[tuple[int, int], Outcome]
) -> list[Outcome]:
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
