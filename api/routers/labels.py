"""Human labels on pairs, and how well each judge agrees with them (``chatpgt.review``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api import problems
from api.deps import Session
from api.pagination import IdPath
from api.routers.pairs import Filters
from chatpgt.auth.service import Principal
from chatpgt.review import service
from chatpgt.review.schemas import (
    DEFAULT_MIN_LABELS,
    DEFAULT_TARGET,
    Calibration,
    LabelIn,
    LabelOut,
    PairLabels,
)

router = APIRouter(tags=["review"])


def reviewer_of(request: Request) -> str:
    """The API key's name; "local" for a keyless request (auth open to loopback)."""
    principal: Principal | None = getattr(request.state, "api_key", None)
    return principal.name if principal is not None else service.LOCAL_REVIEWER


@router.post(
    "/pairs/{pair_id}/labels",
    response_model=LabelOut,
    status_code=201,
    responses={200: {"model": LabelOut, "description": "Replaced"}, **problems.responses(400, 404)},
)
async def put_label(
    pair_id: IdPath, label: LabelIn, request: Request, response: Response, session: Session
) -> LabelOut:
    """Label a pair as the caller (the key's name). A reviewer has one label per pair: a second
    one replaces the first (200 instead of 201)."""
    out, created = await service.put_label(session, pair_id, label, reviewer=reviewer_of(request))
    await session.commit()
    if not created:
        response.status_code = 200
    return out


@router.get("/pairs/{pair_id}/labels", response_model=PairLabels, responses=problems.responses(404))
async def get_labels(pair_id: IdPath, session: Session) -> PairLabels:
    return await service.pair_labels(session, pair_id)


@router.get("/judges/calibration", response_model=Calibration)
async def get_calibration(
    session: Session,
    filters: Filters,
    target: Annotated[float, Query(ge=0, le=1, description="agreement wanted")] = DEFAULT_TARGET,
    min_labels: Annotated[
        int, Query(ge=1, le=1_000_000, description="least decisive labels behind a suggestion")
    ] = DEFAULT_MIN_LABELS,
) -> Calibration:
    """Per judge (provider, model, method): agreement with the human labels per confidence
    bucket (95% Wilson intervals), flip rate, position bias, length preference, and the lowest
    ``min_confidence`` whose agreement reaches ``target``."""
    return await service.calibration(session, filters, target=target, min_labels=min_labels)
