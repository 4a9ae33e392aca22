"""Human win rates from the playground's blind votes (:mod:`chatpgt.serving.arena` records them):
per pair of models, the decisive votes each way, the ties, and the first model's win rate with
its Wilson interval. Pure but for the one read, so that serving (the playground, ``GET
/arena/win-rates``) and an evaluation's report count them the same way."""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chatpgt.review.models import ArenaBattle
from chatpgt.review.schemas import Rate
from chatpgt.review.service import wilson

POSITIONS = ("A", "B", "C")  # a battle shows two or three essays, in this order
TIE = "tie"
CHOICES = (*POSITIONS, TIE)


@dataclass(frozen=True, slots=True)
class PairRate:
    """Votes between two models: ``first`` won ``rate.hits`` of ``rate.n`` decisive votes."""

    first_id: int
    second_id: int
    first: str
    second: str
    first_wins: int
    second_wins: int
    ties: int
    rate: Rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": {"model_id": self.first_id, "name": self.first},
            "second": {"model_id": self.second_id, "name": self.second},
            "first_wins": self.first_wins,
            "second_wins": self.second_wins,
            "ties": self.ties,
            "first_win_rate": self.rate.model_dump(),
        }


Vote = tuple[list[int], str]  # the battle's model ids in shown order (A first), the choice


def tally(votes: list[Vote], names: dict[int, str]) -> list[PairRate]:
    """Per unordered pair of models (the lower id first): wins each way, ties, and the first
    model's win rate over decisive votes with its Wilson interval.

    A vote among three essays counts for each pair it decides: the chosen model beat each of
    the other two (two decisive results; nothing between the two others), and a tie is a tie
    for every pair of the three."""
    counts: dict[tuple[int, int], list[int]] = {}
    for model_ids, choice in votes:
        if choice == TIE:
            for first, second in itertools.combinations(sorted(model_ids), 2):
                counts.setdefault((first, second), [0, 0, 0])[2] += 1
            continue
        winner = model_ids[POSITIONS.index(choice)]
        for loser in model_ids:
            if loser != winner:
                first, second = sorted((winner, loser))
                counts.setdefault((first, second), [0, 0, 0])[0 if winner == first else 1] += 1
    return [
        PairRate(
            first_id=first,
            second_id=second,
            first=names.get(first, str(first)),
            second=names.get(second, str(second)),
            first_wins=w1,
            second_wins=w2,
            ties=ties,
            rate=wilson(w1, w1 + w2),
        )
        for (first, second), (w1, w2, ties) in sorted(counts.items())
    ]


def _votes_stmt() -> Any:
    return select(ArenaBattle.model_ids, ArenaBattle.choice).where(ArenaBattle.choice.is_not(None))


async def voted_battles(session: AsyncSession) -> list[Vote]:
    """Every vote."""
    rows = await session.execute(_votes_stmt())
    return [(list(ids), str(choice)) for ids, choice in rows.all()]


def votes_between(session: Session, model_ids: Collection[int]) -> list[Vote]:
    """The votes of battles with at least two of ``model_ids`` (an evaluation's models; sync,
    for workers). Tallied, a three-way battle also gives pairs with its third model: keep the
    pairs wanted."""
    wanted = set(model_ids)
    rows = session.execute(_votes_stmt()).all()
    return [(list(ids), str(c)) for ids, c in rows if len(wanted.intersection(ids)) >= 2]
