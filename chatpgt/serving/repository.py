"""All SQL of serving: what a model card reads (the model, its lineage and runs, its latest
evaluation) and the generation requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chatpgt.db.base import utcnow
from chatpgt.evaluation.models import EvalRun
from chatpgt.orchestration import leases
from chatpgt.orchestration.status import RunStatus
from chatpgt.review.models import ArenaBattle
from chatpgt.serving.models import ModelGeneration
from chatpgt.training.models import RegisteredModel, TrainingRun
from chatpgt.training.repository import RunStore

# How many of the newest succeeded evaluation runs are searched for a model's latest one.
_EVAL_LOOKBACK = 500


async def get_model(session: AsyncSession, model_id: int) -> RegisteredModel | None:
    return await session.get(RegisteredModel, model_id)


async def get_model_by_name(session: AsyncSession, name: str) -> RegisteredModel | None:
    return await session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))


async def ancestry(session: AsyncSession, model: RegisteredModel) -> list[RegisteredModel]:
    """The model's lineage, root (base) first and the model itself last."""
    chain = [model]
    seen = {model.id}
    while chain[0].parent_id is not None and len(chain) < 32:
        parent = await session.get(RegisteredModel, chain[0].parent_id)
        if parent is None or parent.id in seen:
            break
        seen.add(parent.id)
        chain.insert(0, parent)
    return chain


async def runs_by_id(session: AsyncSession, run_ids: Sequence[int]) -> dict[int, TrainingRun]:
    if not run_ids:
        return {}
    rows = await session.scalars(select(TrainingRun).where(TrainingRun.id.in_(run_ids)))
    return {run.id: run for run in rows}


async def latest_evaluation(
    session: AsyncSession, model_id: int
) -> tuple[EvalRun, dict[str, Any]] | None:
    """The newest succeeded evaluation run that measured ``model_id``, with its results entry
    for the model. The runs' model lists are JSON, read here rather than matched in SQL, so the
    same statement serves Postgres and SQLite."""
    runs = await session.scalars(
        select(EvalRun)
        .where(EvalRun.status == RunStatus.SUCCEEDED)
        .order_by(EvalRun.id.desc())
        .limit(_EVAL_LOOKBACK)
    )
    for run in runs:
        for entry in (run.results or {}).get("models") or []:
            if entry.get("model_id") == model_id:
                return run, entry
    return None


async def models_of_run(session: AsyncSession, run_id: int) -> list[int]:
    """The registered model a training run produced (none or one)."""
    found = await session.scalar(select(RegisteredModel.id).where(RegisteredModel.run_id == run_id))
    return [] if found is None else [int(found)]


async def models_of_eval_run(session: AsyncSession, run_id: int) -> list[int]:
    """The registered models an evaluation run measured."""
    run = await session.get(EvalRun, run_id)
    if run is None:
        return []
    return [int(m["model_id"]) for m in run.models or [] if m.get("model_id") is not None]


# --------------------------------------------------------------------------------------------
# Generation requests: API side (async)


async def create_generation(
    session: AsyncSession, *, model_id: int, request: dict[str, Any]
) -> ModelGeneration:
    row = ModelGeneration(
        model_id=model_id,
        status=RunStatus.QUEUED,
        request=request,
        results=[],
        timings={},
    )
    session.add(row)
    await session.flush()
    return row


async def get_generation(session: AsyncSession, generation_id: int) -> ModelGeneration | None:
    return await session.get(ModelGeneration, generation_id, populate_existing=True)


# --------------------------------------------------------------------------------------------
# Generation requests: worker side (sync)


@dataclass(frozen=True, slots=True)
class GenerationSnapshot:
    id: int
    status: str
    request: dict[str, Any]
    model_path: str
    model_name: str
    attempts: int
    lease_expired: bool


class GenerationStore(RunStore):
    """The worker's sync access to generation requests: claim, heartbeat and finish are the
    training run store's statements on this table (same lifecycle, same lease columns)."""

    table = ModelGeneration

    def read(self, generation_id: int) -> GenerationSnapshot | None:
        g = ModelGeneration
        with Session(self.engine) as session:
            row = session.execute(
                select(
                    g,
                    RegisteredModel.path,
                    RegisteredModel.name,
                    leases.lease_free(g),
                )
                .join(RegisteredModel, RegisteredModel.id == g.model_id)
                .where(g.id == generation_id)
            ).first()
            if row is None:
                return None
            gen, path, name, expired = row
            return GenerationSnapshot(
                id=gen.id,
                status=gen.status,
                request=dict(gen.request),
                model_path=path,
                model_name=name,
                attempts=gen.attempts,
                lease_expired=bool(expired),
            )

    def orphaned_generations(self, queued_for_s: float) -> list[tuple[int, float]]:
        """Requests a starting gpu worker re-enqueues (see RunStore.orphaned_runs)."""
        now = utcnow()
        with Session(self.engine) as session:
            rows = session.execute(leases.recoverable_stmt(ModelGeneration, queued_for_s)).all()
        return [(int(row_id), leases.wait_until_free(expires, now)) for row_id, expires in rows]


# --------------------------------------------------------------------------------------------
# Playground battles


async def create_battle(
    session: AsyncSession,
    *,
    title: str,
    reviewer: str,
    model_ids: list[int],
    generation_ids: list[int],
) -> ArenaBattle:
    battle = ArenaBattle(
        title=title, reviewer=reviewer, model_ids=model_ids, generation_ids=generation_ids
    )
    session.add(battle)
    await session.flush()
    return battle


async def get_battle(session: AsyncSession, battle_id: int) -> ArenaBattle | None:
    return await session.get(ArenaBattle, battle_id, populate_existing=True)


async def generations_by_id(
    session: AsyncSession, ids: Sequence[int]
) -> dict[int, ModelGeneration]:
    if not ids:
        return {}
    rows = await session.scalars(select(ModelGeneration).where(ModelGeneration.id.in_(ids)))
    return {row.id: row for row in rows}


async def record_vote(
    session: AsyncSession, battle_id: int, *, choice: str, winner: int | None, voter: str
) -> bool:
    """Store the vote once; False when the battle already has one."""
    stmt = (
        update(ArenaBattle)
        .where(ArenaBattle.id == battle_id, ArenaBattle.choice.is_(None))
        .values(choice=choice, winner_model_id=winner, voted_by=voter, voted_at=utcnow())
        .returning(ArenaBattle.id)
    )
    return (await session.execute(stmt)).first() is not None


async def model_names(session: AsyncSession, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(
        select(RegisteredModel.id, RegisteredModel.name).where(RegisteredModel.id.in_(ids))
    )
    return {int(i): str(n) for i, n in rows.all()}


async def trained_models(session: AsyncSession, limit: int = 500) -> list[RegisteredModel]:
    """Registered models, newest first (the playground's choices)."""
    rows = await session.scalars(
        select(RegisteredModel).order_by(RegisteredModel.id.desc()).limit(limit)
    )
    return list(rows)


async def heldout_titles(session: AsyncSession, runs: int = 20, limit: int = 500) -> list[str]:
    """The titles the newest ``runs`` SFT runs held out (no model of those runs' lineages trained
    on them: fair titles to compare on), newest run first, each once."""
    rows = await session.scalars(
        select(TrainingRun.essay_split)
        .where(TrainingRun.kind == "sft", TrainingRun.essay_split.is_not(None))
        .order_by(TrainingRun.id.desc())
        .limit(runs)
    )
    titles: dict[str, None] = {}
    for split in rows.all():
        for essay in (split or {}).get("eval", []):
            if isinstance(essay, dict) and essay.get("title"):
                titles.setdefault(str(essay["title"]), None)
    return list(titles)[:limit]
