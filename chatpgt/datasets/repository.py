"""SQL for datasets: the provenance of the jobs behind an export, near-duplicate flags and the
scans that write them, imports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import DatagenJob, Generation, JobTopic
from chatpgt.datasets.models import DedupScan
from chatpgt.orchestration import leases
from chatpgt.orchestration.status import DEDUP_SCAN, RunStatus
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


def _succeeded_essays(job_ids: Sequence[int]) -> tuple[ColumnElement[bool], ...]:
    return (
        Generation.job_id.in_(job_ids),
        Generation.status == "succeeded",
        Generation.text.is_not(None),
    )


async def count_essays(session: AsyncSession, job_ids: Sequence[int]) -> int:
    """How many essays :func:`stream_essays` yields for these jobs (at this moment)."""
    stmt = select(func.count()).select_from(Generation).where(*_succeeded_essays(job_ids))
    return int((await session.execute(stmt)).scalar_one())


async def stream_essays(
    session: AsyncSession, job_ids: Sequence[int], batch_size: int = 500
) -> AsyncIterator[Sequence[tuple[int, int, str]]]:
    """(generation id, job id, text) of the succeeded essays of the given jobs, in id order."""
    stmt = (
        select(Generation.id, Generation.job_id, Generation.text)
        .where(*_succeeded_essays(job_ids))
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


# --- near-duplicate scans: leased rows of dedup_scans (chatpgt.datasets.scans, .scan_runner) --


async def create_scan(session: AsyncSession, job_ids: Sequence[int], threshold: float) -> DedupScan:
    scan = DedupScan(
        status=RunStatus.QUEUED,
        job_ids=list(job_ids),
        threshold=threshold,
        progress={},
        cancel_requested=False,
        attempts=0,
    )
    session.add(scan)
    await session.flush()
    return scan


async def get_scan(session: AsyncSession, scan_id: int) -> DedupScan | None:
    return await session.get(DedupScan, scan_id, populate_existing=True)


async def list_scans(
    session: AsyncSession, *, limit: int, before_id: int | None = None, status: str | None = None
) -> list[DedupScan]:
    """Scans newest first (a keyset page: ``before_id`` is the last id of the page before)."""
    stmt = select(DedupScan).order_by(DedupScan.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(DedupScan.id < before_id)
    if status is not None:
        stmt = stmt.where(DedupScan.status == status)
    return list((await session.execute(stmt)).scalars())


async def transition_scan(
    session: AsyncSession, scan_id: int, target: str, *, owner: str | None = None, **values: Any
) -> bool:
    """The one way a scan's status changes (``DEDUP_SCAN``'s table, and ``owner``'s lease when
    given); False when the scan was not in a state that allows it."""
    return await leases.transition(
        session, DedupScan, DEDUP_SCAN, scan_id, target, owner=owner, **values
    )


async def renew_scan_lease(
    session: AsyncSession, scan_id: int, owner: str, lease_s: float
) -> tuple[bool, bool]:
    """Extend the lease: (still ours, cancel requested)."""
    stmt = leases.renew_stmt(DedupScan, scan_id, owner, lease_s, DedupScan.status == "running")
    row = (await session.execute(stmt)).first()
    return (row is not None, bool(row[0]) if row is not None else False)


async def write_scan_progress(
    session: AsyncSession, scan_id: int, owner: str, progress: dict[str, Any]
) -> bool:
    """Store a running scan's progress while ``owner`` holds it; False when the lease is gone."""
    stmt = (
        update(DedupScan)
        .where(DedupScan.id == scan_id, DedupScan.lease_owner == owner)
        .values(progress=progress, updated_at=leases.now())
        .returning(DedupScan.id)
    )
    return (await session.execute(stmt)).first() is not None


async def recoverable_scans(session: AsyncSession, queued_for_s: float) -> list[tuple[int, float]]:
    """Scans a starting worker re-enqueues, with the seconds until each lease runs out."""
    at = leases.now()
    rows = (await session.execute(leases.recoverable_stmt(DedupScan, queued_for_s))).all()
    return [(int(i), leases.wait_until_free(expires, at)) for i, expires in rows]


async def orphaned_scans(session: AsyncSession) -> list[int]:
    """Running scans whose lease ran out (what the periodic sweep re-enqueues)."""
    return [int(i) for i in (await session.scalars(leases.orphans_stmt(DedupScan))).all()]


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
