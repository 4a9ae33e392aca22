"""The blind playground: two or three models write on one title, a reviewer sees the essays as
A, B (and C) in a random order, recorded with the battle, without the models' names, and votes
for one or a tie.
The votes give a human win rate per pair of models with its Wilson interval (ties counted
apart: the rate is over decisive votes).

The essays are two ordinary generation requests (:mod:`chatpgt.serving.runner`), so a battle
costs what two generations cost and runs on the gpu queue like them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.errors import InvalidInput, InvalidState, NotFound
from chatpgt.orchestration.status import RunStatus
from chatpgt.review.arena import POSITIONS, TIE, PairRate, tally, voted_battles
from chatpgt.review.models import ArenaBattle
from chatpgt.serving import repository as repo
from chatpgt.serving.schemas import GenerationCreate
from chatpgt.serving.service import submit_generation
from chatpgt.training.models import RegisteredModel

DEFAULT_MAX_NEW_TOKENS = 300


class BattleNotFound(NotFound):
    def __init__(self, battle_id: int) -> None:
        super().__init__(f"Battle {battle_id} does not exist.", battle_id=battle_id)


@dataclass(frozen=True, slots=True)
class Side:
    position: str
    status: str
    text: str | None
    error: str | None
    model_name: str | None  # only once the battle is voted


@dataclass(frozen=True, slots=True)
class BattleView:
    id: int
    title: str
    sides: list[Side]
    choice: str | None
    voted_by: str | None

    @property
    def ready(self) -> bool:
        return all(s.status == RunStatus.SUCCEEDED for s in self.sides)

    @property
    def failed(self) -> bool:
        return any(s.status in (RunStatus.FAILED, RunStatus.CANCELLED) for s in self.sides)


async def create_battle(
    session: AsyncSession,
    *,
    title: str,
    model_ids: list[int],
    reviewer: str,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> tuple[ArenaBattle, list[int]]:
    """A battle between two or three distinct models on ``title``, in a random order, and the
    ids of their generation requests to enqueue (the caller commits first). 400 for anything
    else than two or three distinct models or an empty title; 404/409 as for a generation."""
    title = " ".join(title.split())
    if not title:
        raise InvalidInput("Give a title for the essays.")
    if len(title) > 1000:
        raise InvalidInput("The title is longer than 1000 characters.")
    if len(model_ids) not in (2, 3) or len(set(model_ids)) != len(model_ids):
        raise InvalidInput("Pick two or three different models.")
    order = list(model_ids)
    secrets.SystemRandom().shuffle(order)
    body = GenerationCreate(title=title, max_new_tokens=max_new_tokens)
    generations = [await submit_generation(session, model_id, body) for model_id in order]
    battle = await repo.create_battle(
        session,
        title=title,
        reviewer=reviewer,
        model_ids=order,
        generation_ids=[g.id for g in generations],
    )
    return battle, [g.id for g in generations]


async def battle_view(session: AsyncSession, battle_id: int) -> BattleView:
    battle = await repo.get_battle(session, battle_id)
    if battle is None:
        raise BattleNotFound(battle_id)
    rows = await repo.generations_by_id(session, battle.generation_ids)
    names = await repo.model_names(session, battle.model_ids) if battle.choice else {}
    sides = []
    positions = POSITIONS[: len(battle.model_ids)]
    for position, gen_id, model_id in zip(
        positions, battle.generation_ids, battle.model_ids, strict=True
    ):
        row = rows.get(gen_id)
        results = (row.results or []) if row else []
        sides.append(
            Side(
                position=position,
                status=row.status if row else RunStatus.FAILED,
                text=results[0]["text"] if results else None,
                error=row.error if row else "the generation request is gone",
                model_name=names.get(model_id),
            )
        )
    return BattleView(battle.id, battle.title, sides, battle.choice, battle.voted_by)


async def vote(session: AsyncSession, battle_id: int, choice: str, voter: str) -> None:
    """Record the vote (once): 400 for a choice the battle does not show (C of two essays),
    409 before every essay is in or when the battle already has a vote."""
    view = await battle_view(session, battle_id)
    allowed = [s.position for s in view.sides] + [TIE]
    if choice not in allowed:
        raise InvalidInput(f"A vote on this battle is one of {', '.join(allowed)}.")
    if not view.ready:
        raise InvalidState("Every essay must be written before the vote.", battle_id=battle_id)
    battle = await repo.get_battle(session, battle_id)
    assert battle is not None
    winner = None if choice == TIE else battle.model_ids[POSITIONS.index(choice)]
    if not await repo.record_vote(session, battle_id, choice=choice, winner=winner, voter=voter):
        raise InvalidState("This battle already has a vote.", battle_id=battle_id)


async def registered_models(session: AsyncSession) -> list[RegisteredModel]:
    """Every registered model (up to 500), newest first."""
    return await repo.trained_models(session)


async def servable_models(session: AsyncSession) -> list[RegisteredModel]:
    """The registered models that can write here (a folder with a config.json), newest first:
    the playground's choices."""
    models = await repo.trained_models(session)
    present = await asyncio.to_thread(
        lambda: [(Path(m.path) / "config.json").is_file() for m in models]
    )
    return [m for m, ok in zip(models, present, strict=True) if ok]


async def win_rates(
    session: AsyncSession, model_ids: Collection[int] = ()
) -> tuple[int, list[PairRate]]:
    """(votes, per pair of models) from every vote, or from the votes between models of
    ``model_ids`` (a three-way vote counts for the pairs it decides among them)."""
    votes = await voted_battles(session)
    wanted = set(model_ids)
    if wanted:
        votes = [v for v in votes if len(wanted.intersection(v[0])) >= 2]
    ids = sorted({i for ids, _ in votes for i in ids})
    rates = tally(votes, await repo.model_names(session, ids))
    if wanted:
        rates = [r for r in rates if r.first_id in wanted and r.second_id in wanted]
    return len(votes), rates


async def heldout_titles(session: AsyncSession) -> list[str]:
    """Titles the SFT runs held out: the playground suggests them (no model trained from those
    runs saw these essays)."""
    return await repo.heldout_titles(session)
