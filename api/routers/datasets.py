"""Datasets: near-duplicate scans and pair imports (``docs/datasets.md``). Exports and their
cards are GET /pairs/export and GET /pairs/card."""

from __future__ import annotations

from fastapi import APIRouter

from api import problems
from api.deps import Roots, Session
from chatpgt.datasets import dedup, imports
from chatpgt.datasets.schemas import DedupRequest, DedupResult, PairImport, PairImportResult

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
