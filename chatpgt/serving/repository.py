"""All SQL of serving: what a model card reads (the model, its lineage and runs, its latest
evaluation) and the generation requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.evaluation.models import EvalRun
from chatpgt.orchestration.status import RunStatus
from chatpgt.training.models import RegisteredModel, TrainingRun

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
