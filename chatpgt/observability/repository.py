"""The SQL behind ``GET /metrics``: one grouped query per family, read at scrape time.

Counts come from the rows themselves, so every process's work is counted once and a scrape
always agrees with ``GET /datagen/jobs/{id}``, whichever worker did the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.training.models import TrainingRun


@dataclass(frozen=True, slots=True)
class ItemGroup:
    """Generations or judgments of one stage, provider, model and status."""

    stage: str  # "generation" | "judgment"
    provider: str
    model: str
    status: str
    count: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class RunGroup:
    kind: str
    status: str
    count: int
    steps: int  # the sum of the runs' current optimizer steps


@dataclass(slots=True)
class DatabaseCounts:
    jobs: dict[str, int] = field(default_factory=dict)
    items: list[ItemGroup] = field(default_factory=list)
    runs: list[RunGroup] = field(default_factory=list)


async def read_counts(session: AsyncSession) -> DatabaseCounts:
    """Jobs by status; items by stage, provider, model and status with their tokens and cost;
    training runs by kind and status with their steps. Four grouped queries."""
    counts = DatabaseCounts()
    jobs = await session.execute(
        select(DatagenJob.status, func.count()).group_by(DatagenJob.status)
    )
    counts.jobs = {status: int(n) for status, n in jobs}
    stages = (
        ("generation", Generation, Generation.provider, Generation.model),
        ("judgment", Judgment, Judgment.judge_provider, Judgment.judge_model),
    )
    for stage, model, provider_col, model_col in stages:
        rows = await session.execute(
            select(
                provider_col,
                model_col,
                model.status,
                func.count(),
                func.coalesce(func.sum(model.prompt_tokens), 0),
                func.coalesce(func.sum(model.completion_tokens), 0),
                func.coalesce(func.sum(model.cost_usd), 0),
            ).group_by(provider_col, model_col, model.status)
        )
        counts.items += [
            ItemGroup(stage, provider, name, status, int(n), int(pt), int(ct), Decimal(cost))
            for provider, name, status, n, pt, ct, cost in rows
        ]
    step = TrainingRun.progress["step"].as_integer()
    runs = await session.execute(
        select(
            TrainingRun.kind,
            TrainingRun.status,
            func.count(),
            func.coalesce(func.sum(step), 0),
        ).group_by(TrainingRun.kind, TrainingRun.status)
    )
    counts.runs = [RunGroup(kind, status, int(n), int(steps)) for kind, status, n, steps in runs]
    return counts
