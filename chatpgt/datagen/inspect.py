"""Read-only views of a job's work: essays (generations), judgments, judge consistency, cost.

Nothing here writes; the datagen runner owns these rows. Lists are keyset-paginated on id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Float, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen import repository as repo
from chatpgt.datagen.models import Generation, Judgment
from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.errors import NotFound

# --- schemas ---------------------------------------------------------------------------------


class _WorkOut(BaseModel):
    status: str = Field(description="pending, running, succeeded, failed, skipped or cancelled")
    attempts: int
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: int | None
    created_at: datetime
    finished_at: datetime | None


class EssayOut(_WorkOut):
    """One candidate essay (a generation row)."""

    id: int
    job_id: int
    topic_id: int
    generator_key: str
    provider: str
    model: str
    params: dict[str, Any]
    sample_index: int
    system_prompt: str | None
    prompt: str
    text: str | None = Field(description="null until the generation succeeded")
    finish_reason: str | None


class JudgmentOut(_WorkOut):
    """One verdict on an ordered pair: essay A is ``generation_a_id``, B ``generation_b_id``."""

    id: int
    job_id: int
    topic_id: int
    generation_a_id: int
    generation_b_id: int
    judge_provider: str
    judge_model: str
    winner: str | None = Field(description="'A' or 'B' as shown to the judge")
    winner_generation_id: int | None
    reasoning: str | None
    confidence: int | None
    raw_answer: str | None


class EssayPage(BaseModel):
    items: list[EssayOut]
    next_cursor: str | None


class JudgmentPage(BaseModel):
    items: list[JudgmentOut]
    next_cursor: str | None


# --- queries ---------------------------------------------------------------------------------


def _columns(model: Any, schema: type[BaseModel]) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = []
    for name in schema.model_fields:
        column = getattr(model, name)
        # Money is NUMERIC; the API shows a float, like every other figure.
        columns.append(cast(column, Float).label(name) if name == "cost_usd" else column)
    return columns


async def list_essays(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    job_id: int | None = None,
    topic_id: int | None = None,
    status: str | None = None,
    model: str | None = None,
) -> EssayPage:
    """One page of essays in id order. Raises InvalidInput for a cursor this API did not issue."""
    after_id = decode_cursor(cursor)
    stmt = select(*_columns(Generation, EssayOut)).order_by(Generation.id).limit(limit + 1)
    if after_id is not None:
        stmt = stmt.where(Generation.id > after_id)
    if job_id is not None:
        stmt = stmt.where(Generation.job_id == job_id)
    if topic_id is not None:
        stmt = stmt.where(Generation.topic_id == topic_id)
    if status:
        stmt = stmt.where(Generation.status == status)
    if model:
        stmt = stmt.where(Generation.model == model)
    rows = (await session.execute(stmt)).all()
    items = [EssayOut.model_validate(row._mapping) for row in rows[:limit]]
    more = len(rows) > limit
    return EssayPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


async def get_essay(session: AsyncSession, essay_id: int) -> EssayOut:
    """One essay; raises NotFound."""
    stmt = select(*_columns(Generation, EssayOut)).where(Generation.id == essay_id)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound(f"No essay with id {essay_id}.", essay_id=essay_id)
    return EssayOut.model_validate(row._mapping)


async def list_judgments(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    job_id: int | None = None,
    topic_id: int | None = None,
    status: str | None = None,
) -> JudgmentPage:
    """One page of judgments in id order. Raises InvalidInput for a cursor this API did not
    issue."""
    after_id = decode_cursor(cursor)
    stmt = select(*_columns(Judgment, JudgmentOut)).order_by(Judgment.id).limit(limit + 1)
    if after_id is not None:
        stmt = stmt.where(Judgment.id > after_id)
    if job_id is not None:
        stmt = stmt.where(Judgment.job_id == job_id)
    if topic_id is not None:
        stmt = stmt.where(Judgment.topic_id == topic_id)
    if status:
        stmt = stmt.where(Judgment.status == status)
    rows = (await session.execute(stmt)).all()
    items = [JudgmentOut.model_validate(row._mapping) for row in rows[:limit]]
    more = len(rows) > limit
    return JudgmentPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)


async def get_judgment(session: AsyncSession, judgment_id: int) -> JudgmentOut:
    """One judgment; raises NotFound."""
    stmt = select(*_columns(Judgment, JudgmentOut)).where(Judgment.id == judgment_id)
    row = (await session.execute(stmt)).first()
    if row is None:
        raise NotFound(f"No judgment with id {judgment_id}.", judgment_id=judgment_id)
    return JudgmentOut.model_validate(row._mapping)


async def judge_flip_counts(session: AsyncSession, job_ids: Sequence[int] = ()) -> tuple[int, int]:
    """``(matchups, flips)`` over the given jobs (all jobs when empty): matchups whose two
    orders both succeeded, and those where the two verdicts named different winners."""
    per_job = await repo.flip_counts(session, job_ids)
    return sum(m for m, _ in per_job.values()), sum(f for _, f in per_job.values())


async def work_costs(
    session: AsyncSession, job_ids: Sequence[int] = ()
) -> dict[str, tuple[int, float, int, int]]:
    """Per table (``"generations"``, ``"judgments"``): ``(rows, cost_usd, prompt_tokens,
    completion_tokens)`` summed over the given jobs (all jobs when empty), every status."""
    totals: dict[str, tuple[int, float, int, int]] = {}
    for name, model in (("generations", Generation), ("judgments", Judgment)):
        stmt = select(
            func.count(),
            func.coalesce(func.sum(model.cost_usd), 0),
            func.coalesce(func.sum(model.prompt_tokens), 0),
            func.coalesce(func.sum(model.completion_tokens), 0),
        )
        if job_ids:
            stmt = stmt.where(model.job_id.in_(job_ids))
        count, cost, prompt, completion = (await session.execute(stmt)).one()
        totals[name] = (int(count), float(cost), int(prompt), int(completion))
    return totals
