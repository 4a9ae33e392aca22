"""Preference pairs (list, one, statistics, export) and the work behind them (essays, judgments).

GET /pairs and GET /pairs/{id} return bytes built by the service; their documented shapes are
``PairPage`` and ``PairOut``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import Field

from api import problems
from api.deps import ReadSession, Session
from api.pagination import MAX_ID, IdPath, PageLimit
from chatpgt.datagen import service as datagen_service
from chatpgt.datagen.schemas import EssayOut, EssayPage, JudgmentOut, JudgmentPage, WorkStatus
from chatpgt.datasets.export import MEDIA_TYPES, export_card, iter_export
from chatpgt.datasets.hf import Layout
from chatpgt.pairs import service
from chatpgt.pairs.repository import PairFilters
from chatpgt.pairs.schemas import ExportFormat, PairOut, PairPage, PairSource
from chatpgt.review import service as review
from chatpgt.review.schemas import PairStatsWithLabels

router = APIRouter(tags=["pairs"])

JSON = "application/json"
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


# async: a plain ``def`` dependency runs on a worker thread, a hand-off per request.
async def pair_filters(
    min_confidence: Annotated[
        float | None, Query(ge=0, le=10, description="keep pairs with confidence ≥ this")
    ] = None,
    job_id: Annotated[list[Id] | None, Query(description="repeat to select several jobs")] = None,
    model: Annotated[str | None, Query(description="chosen or rejected model")] = None,
    source: PairSource | None = None,
    dedup_threshold: Annotated[
        float | None,
        Query(
            gt=0,
            le=1,
            description="leave out pairs with an essay flagged as a near-duplicate at or above "
            "this similarity (0 < t ≤ 1; see POST /pairs/dedup)",
        ),
    ] = None,
) -> PairFilters:
    return PairFilters(
        min_confidence=min_confidence,
        job_ids=tuple(dict.fromkeys(job_id or ())),
        model=model,
        source=source,
        dedup_threshold=dedup_threshold,
    )


Filters = Annotated[PairFilters, Depends(pair_filters)]


@router.get("/pairs", response_model=PairPage, responses=problems.responses(400))
async def list_pairs(
    session: ReadSession, filters: Filters, limit: PageLimit, cursor: str | None = None
) -> Response:
    """Matching pairs in id order; follow `next_cursor` (a bad cursor is a 400)."""
    body = await service.pairs_page_json(session, filters, limit=limit, cursor=cursor)
    return Response(body, media_type=JSON)


@router.get("/pairs/stats", response_model=PairStatsWithLabels)
async def get_pair_stats(session: Session, filters: Filters) -> PairStatsWithLabels:
    stats = await review.stats_with_labels(session, filters)
    await session.commit()  # keeps the summaries of finished jobs it computed
    return stats


@router.get(
    "/pairs/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "TRL conversational preference JSONL or Parquet, or the seed CSV "
            "columns",
            "content": {media: {} for media in MEDIA_TYPES.values()},
        }
    },
)
async def export_pairs(
    session: Session,
    filters: Filters,
    fmt: Annotated[ExportFormat, Query(alias="format")] = "jsonl",
    balance_length: Annotated[
        bool, Query(description="drop pairs so the chosen essay is longer in half of them")
    ] = False,
) -> StreamingResponse:
    """Every matching pair, streamed (memory flat in the number of pairs). Its dataset card is
    `GET /pairs/card` with the same parameters."""
    return StreamingResponse(
        iter_export(session, filters, fmt, balance_length=balance_length),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="pairs.{fmt}"'},
    )


@router.get(
    "/pairs/card",
    response_class=Response,
    responses={
        200: {
            "description": "README.md (Hugging Face dataset card)",
            "content": {"text/markdown": {}},
        }
    },
)
async def get_pair_card(
    session: Session,
    filters: Filters,
    layout: Annotated[
        Layout, Query(description="where the card's configs point: parquet, jsonl or hf files")
    ] = "parquet",
    balance_length: bool = False,
) -> Response:
    """The dataset card of the export with the same parameters: provenance, counts, bias,
    dedup and cost figures of the selection (`docs/datasets.md`)."""
    card = await export_card(session, filters, layout=layout, balance_length=balance_length)
    await session.commit()  # keeps the summaries of finished jobs it computed
    return Response(card, media_type="text/markdown; charset=utf-8")


# ":int": only digits match, so GET /pairs/import (a POST-only path) is a 405, not a 422 for a
# pair id "import"; FastAPI documents the path as /pairs/{pair_id} all the same.
@router.get("/pairs/{pair_id:int}", response_model=PairOut, responses=problems.responses(404))
async def get_pair(pair_id: IdPath, session: ReadSession) -> Response:
    return Response(await service.pair_json(session, pair_id), media_type=JSON)


@router.get(
    "/essays",
    response_model=EssayPage,
    tags=["inspect"],
    responses=problems.responses(400),
)
async def list_essays(
    session: Session,
    limit: PageLimit,
    cursor: str | None = None,
    job_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    topic_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: WorkStatus | None = None,
    model: str | None = None,
) -> EssayPage:
    """Candidate essays (generations) in id order."""
    return await datagen_service.list_essays(
        session,
        limit=limit,
        cursor=cursor,
        job_id=job_id,
        topic_id=topic_id,
        status=status,
        model=model,
    )


@router.get(
    "/essays/{essay_id}",
    response_model=EssayOut,
    tags=["inspect"],
    responses=problems.responses(404),
)
async def get_essay(essay_id: IdPath, session: Session) -> EssayOut:
    return await datagen_service.get_essay(session, essay_id)


@router.get(
    "/judgments",
    response_model=JudgmentPage,
    tags=["inspect"],
    responses=problems.responses(400),
)
async def list_judgments(
    session: Session,
    limit: PageLimit,
    cursor: str | None = None,
    job_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    topic_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: WorkStatus | None = None,
) -> JudgmentPage:
    """Judge verdicts in id order; each matchup has two rows, one per order."""
    return await datagen_service.list_judgments(
        session, limit=limit, cursor=cursor, job_id=job_id, topic_id=topic_id, status=status
    )


@router.get(
    "/judgments/{judgment_id}",
    response_model=JudgmentOut,
    tags=["inspect"],
    responses=problems.responses(404),
)
async def get_judgment(judgment_id: IdPath, session: Session) -> JudgmentOut:
    return await datagen_service.get_judgment(session, judgment_id)
