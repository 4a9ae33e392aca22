"""Datasets: near-duplicate scans and pair imports (``docs/datasets.md``). Exports and their
cards are GET /pairs/export and GET /pairs/card.

A scan is queued work: POST /pairs/dedup answers 202 with the scan, a datagen worker runs it,
GET /pairs/dedup/{id} follows it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api import problems
from api.deps import Queue, Roots, Session
from api.leased import add_get_and_cancel
from api.pagination import PageLimit
from chatpgt.datasets import imports, scans
from chatpgt.datasets.schemas import (
    DedupRequest,
    DedupScanOut,
    DedupScanPage,
    PairImport,
    PairImportResult,
)
from chatpgt.orchestration.status import RunStatus

router = APIRouter(tags=["datasets"])


@router.post(
    "/pairs/dedup",
    status_code=202,
    response_model=DedupScanOut,
    responses={
        202: {
            "description": "queued; follow it at the Location",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "the scan"}},
        },
        **problems.responses(400),
    },
)
async def scan_near_duplicates(
    session: Session, enqueue: Queue, body: DedupRequest, response: Response
) -> DedupScanOut:
    """Queue a near-duplicate scan (MinHash-LSH) of the given jobs' essays (every job when
    none), scanned together, against each other and their corpus essays; a datagen worker runs
    it and replaces the jobs' earlier flags. Follow it with GET /pairs/dedup/{id}. Exports and
    stats leave the flagged pairs out with `dedup_threshold`."""
    scan = await scans.submit(session, body)
    await session.commit()
    await enqueue(scans.TASK_NAME, scan.id)
    response.headers["Location"] = f"/pairs/dedup/{scan.id}"
    return await scans.get_scan(session, scan.id)


@router.get("/pairs/dedup", response_model=DedupScanPage, responses=problems.responses(400))
async def list_near_duplicate_scans(
    session: Session,
    limit: PageLimit,
    status: Annotated[RunStatus | None, Query()] = None,
    cursor: str | None = None,
) -> DedupScanPage:
    """Near-duplicate scans, newest first; follow `next_cursor` (a bad cursor is a 400)."""
    return await scans.list_scans(session, limit=limit, cursor=cursor, status=status)


add_get_and_cancel(
    router,
    "/pairs/dedup",
    "near_duplicate_scan",
    DedupScanOut,
    scans.get_scan,
    scans.cancel_scan,
    param="scan_id",
    get_doc="A scan: its status, essays scanned so far, and the counts once it succeeded.",
    cancel_doc="Cancel a scan: a queued one at once, a running one at its worker's next heartbeat "
    "(the\n    jobs keep their earlier flags); 409 once it finished.",
)


@router.post(
    "/pairs/import",
    response_model=PairImportResult,
    status_code=201,
    responses=problems.responses(400, 403),
)
async def import_pairs(session: Session, roots: Roots, body: PairImport) -> PairImportResult:
    """Import the prompt/chosen/rejected rows of a Hugging Face preference dataset as a job of
    their own (pairs of source `imported`). Every row is checked first: a bad row, a missing
    column or an unreadable dataset is a 400 and writes nothing; a path outside the API's data
    roots is refused."""
    result = await imports.import_pairs(session, body, roots=roots)
    await session.commit()
    return result
