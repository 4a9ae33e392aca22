"""Near-duplicate scans as the API sees them: submit, read, list, cancel.

``POST /pairs/dedup`` writes a queued ``dedup_scans`` row (the request is checked by its schema
first: a bad one writes nothing); the caller commits, then enqueues ``DEDUP_SCAN`` with the
scan's id on the datagen queue. A datagen worker runs it (:mod:`.scan_runner`): the API never
holds a scan's index or waits for it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datasets import repository as repo
from chatpgt.datasets.models import DedupScan
from chatpgt.datasets.schemas import (
    DedupProgress,
    DedupRequest,
    DedupResult,
    DedupScanOut,
    DedupScanPage,
)
from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.errors import InvalidState, NotFound
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.status import DEDUP_SCAN as DEDUP_SCAN_LIFECYCLE
from chatpgt.orchestration.status import RunStatus
from chatpgt.orchestration.tasks import DEDUP_SCAN

TASK_NAME = DEDUP_SCAN


class DedupScanNotFound(NotFound):
    def __init__(self, scan_id: int) -> None:
        super().__init__(f"Dedup scan {scan_id} does not exist.", scan_id=scan_id)


class DedupScanNotCancellable(InvalidState):
    def __init__(self, scan_id: int, status: str) -> None:
        super().__init__(
            f"Dedup scan {scan_id} is {status} and can no longer be cancelled.",
            scan_id=scan_id,
            scan_status=status,
        )


async def submit(session: AsyncSession, request: DedupRequest) -> DedupScan:
    """A queued scan of ``request.job_ids`` (every job when empty); the caller commits and
    enqueues :data:`TASK_NAME` with its id."""
    return await repo.create_scan(session, request.job_ids, request.threshold)


async def get_scan(session: AsyncSession, scan_id: int) -> DedupScanOut:
    scan = await repo.get_scan(session, scan_id)
    if scan is None:
        raise DedupScanNotFound(scan_id)
    return scan_out(scan)


async def list_scans(
    session: AsyncSession, *, limit: int, cursor: str | None = None, status: str | None = None
) -> DedupScanPage:
    """Scans newest first; ``next_cursor`` resumes after the page's last (oldest) scan."""
    scans = await repo.list_scans(
        session, limit=limit, before_id=decode_cursor(cursor), status=status
    )
    last = scans[-1].id if len(scans) == limit else None
    return DedupScanPage(
        items=[scan_out(s) for s in scans],
        next_cursor=encode_cursor(last) if last is not None else None,
    )


SCANS = leased.LeasedKind(
    DedupScan, DEDUP_SCAN_LIFECYCLE, DedupScanNotFound, DedupScanNotCancellable
)


async def cancel_scan(session: AsyncSession, scan_id: int) -> DedupScanOut:
    """A queued scan is cancelled at once; a running one at its worker's next heartbeat (its
    transaction is rolled back: the jobs keep their earlier flags). 409 once it finished (a
    cancelled scan answers as it is)."""
    await SCANS.cancel(session, scan_id)
    return await get_scan(session, scan_id)


def scan_out(scan: DedupScan) -> DedupScanOut:
    return DedupScanOut(
        id=scan.id,
        status=RunStatus(scan.status),
        job_ids=list(scan.job_ids),
        threshold=scan.threshold,
        progress=DedupProgress.model_validate(scan.progress or {}),
        result=DedupResult.model_validate(scan.result) if scan.result else None,
        **scan.leased_out(),
    )
