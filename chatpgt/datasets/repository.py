"""SQL for datasets: the provenance of the jobs behind an export, near-duplicate flags, imports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import DatagenJob, Generation, JobTopic
from chatpgt.pairs.models import NearDuplicate, Pair
from chatpgt.topics.models import Topic


@dataclass(frozen=True, slots=True)
class JobProvenance:
    job_id: int
    status: str
    created_at: datetime
    finished_at: datetime | None
    request: dict[str, Any]
    # the system prompt its essays were asked with (read from one of its generations)
    system_prompt: str | None


async def job_provenance(session: AsyncSession, job_ids: Sequence[int]) -> list[JobProvenance]:
    """The request, status and generation system prompt of each given job, by id."""
    if not job_ids:
        return []
    stmt = (
        select(
            DatagenJob.id,
            DatagenJob.status,
            DatagenJob.created_at,
            DatagenJob.finished_at,
            DatagenJob.request,
        )
        .where(DatagenJob.id.in_(job_ids))
        .order_by(DatagenJob.id)
    )
    out = []
    for job_id, status, created, finished, request in await session.execute(stmt):
        system = (
            await session.execute(
                select(Generation.system_prompt).where(Generation.job_id == job_id).limit(1)
            )
        ).scalar()
        out.append(JobProvenance(job_id, status, created, finished, request or {}, system))
    return out


async def all_job_ids(session: AsyncSession) -> list[int]:
    return [
        int(j)
        for j in (await session.execute(select(DatagenJob.id).order_by(DatagenJob.id))).scalars()
    ]


async def corpus_texts(session: AsyncSession, job_ids: Sequence[int]) -> list[tuple[int, str]]:
    """(topic id, reference text) of the corpus topics the given jobs wrote essays on."""
    topics = select(Generation.topic_id).where(Generation.job_id.in_(job_ids)).distinct()
    stmt = (
        select(Topic.id, Topic.reference_text)
        .where(Topic.id.in_(topics), Topic.reference_text.is_not(None))
        .order_by(Topic.id)
    )
    return [(int(t), text or "") for t, text in await session.execute(stmt)]


async def stream_essays(
    session: AsyncSession, job_ids: Sequence[int], batch_size: int = 500
) -> AsyncIterator[Sequence[tuple[int, int, str]]]:
    """(generation id, job id, text) of the succeeded essays of the given jobs, in id order."""
    stmt = (
        select(Generation.id, Generation.job_id, Generation.text)
        .where(
            Generation.job_id.in_(job_ids),
            Generation.status == "succeeded",
            Generation.text.is_not(None),
        )
        .order_by(Generation.id)
        .execution_options(yield_per=batch_size)
    )
    result = await session.stream(stmt)
    try:
        async for batch in result.partitions(batch_size):
            yield [(int(g), int(j), text or "") for g, j, text in batch]
    finally:
        await result.close()


async def replace_flags(
    session: AsyncSession, job_ids: Sequence[int], rows: Sequence[dict[str, Any]]
) -> None:
    """Drop the near-duplicate flags of the given jobs and insert ``rows``."""
    await session.execute(delete(NearDuplicate).where(NearDuplicate.job_id.in_(job_ids)))
    for i in range(0, len(rows), 1000):
        await session.execute(insert(NearDuplicate), list(rows[i : i + 1000]))
    await session.flush()


async def insert_import_job(
    session: AsyncSession, *, request: dict[str, Any], request_hash: str, at: datetime
) -> int:
    """A finished (``succeeded``) job standing for an import; its id."""
    stmt = (
        insert(DatagenJob)
        .values(
            status="succeeded",
            request=request,
            request_hash=request_hash,
            errors=[],
            attempts=0,
            cancel_requested=False,
            started_at=at,
            finished_at=at,
            updated_at=at,
        )
        .returning(DatagenJob.id)
    )
    return int((await session.execute(stmt)).scalar_one())


async def insert_job_topics(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 1000):
        await session.execute(insert(JobTopic), list(rows[i : i + 1000]))


async def insert_generations(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert the generations; their ids in the order of ``rows``."""
    stmt = insert(Generation).returning(Generation.id, sort_by_parameter_order=True)
    return [int(i) for i in (await session.execute(stmt, list(rows))).scalars()]


async def insert_pairs(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(Pair), list(rows))
