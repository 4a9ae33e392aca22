from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from api import problems
from api.deps import AppSettings, Queue, Session
from api.pagination import IdPath, PageLimit
from chatpgt.datagen import service
from chatpgt.datagen.schemas import DatagenJobCreate, DatagenJobPage, DatagenJobView, JobStatus
from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.orchestration.tasks import DATAGEN_RUN_JOB

router = APIRouter(prefix="/datagen/jobs", tags=["datagen"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatagenJobView,
    responses={
        200: {"model": DatagenJobView, "description": "replayed (same Idempotency-Key)"},
        **problems.responses(400, 409),
    },
)
async def create_job(
    body: DatagenJobCreate,
    session: Session,
    settings: AppSettings,
    enqueue: Queue,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> DatagenJobView:
    job, created = await service.create_job(session, settings, body, idempotency_key)
    await session.commit()
    if created:
        await enqueue(DATAGEN_RUN_JOB, job.id)
    else:
        response.status_code = status.HTTP_200_OK
    return job


@router.get("", response_model=DatagenJobPage, responses=problems.responses(400))
async def list_jobs(
    session: Session,
    limit: PageLimit,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    cursor: str | None = None,
) -> DatagenJobPage:
    items, last = await service.list_job_views(
        session, status=status_, before_id=decode_cursor(cursor), limit=limit
    )
    return DatagenJobPage(items=items, next_cursor=encode_cursor(last) if last else None)


@router.get("/{job_id}", response_model=DatagenJobView, responses=problems.responses(404))
async def get_job(job_id: IdPath, session: Session) -> DatagenJobView:
    return await service.get_job_view(session, job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=DatagenJobView,
    status_code=202,
    responses=problems.responses(404, 409),
)
async def cancel_job(job_id: IdPath, session: Session) -> DatagenJobView:
    view = await service.cancel_job(session, job_id)
    await session.commit()
    return view
