from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from api import problems
from api.deps import AppSettings, Queue, Session
from api.leased import add_get_and_cancel
from api.pagination import PageLimit
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


add_get_and_cancel(
    router,
    "",
    "job",
    DatagenJobView,
    service.get_job_view,
    service.cancel_job,
    param="job_id",
)
