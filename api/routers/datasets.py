"""Datasets: near-duplicate scans and pair imports (``docs/datasets.md``). Exports and their
cards are GET /pairs/export and GET /pairs/card."""

from __future__ import annotations

from fastapi import APIRouter

from api import problems
from api.deps import Session
from chatpgt.datasets import dedup
from chatpgt.datasets.schemas import DedupRequest, DedupResult

router = APIRouter(tags=["datasets"])


@router.post("/pairs/dedup", response_model=DedupResult, responses=problems.responses(400))
async def scan_near_duplicates(session: Session, body: DedupRequest) -> DedupResult:
    """Flag near-duplicate essays (MinHash-LSH) of the given jobs, scanned together, against
    each other and their corpus essays; replaces the jobs' earlier flags. Exports and stats
    leave the flagged pairs out with `dedup_threshold`."""
    result = await dedup.scan(session, body.job_ids, body.threshold)
    await session.commit()
    return DedupResult(
        job_ids=result.job_ids,
        threshold=result.threshold,
        essays=result.essays,
        corpus_essays=result.corpus_essays,
        flagged=result.flagged,
    )
