"""Evaluation runs. Thin: parse, call chatpgt.evaluation.service."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api import problems
from api.deps import AppSettings, Queue, Roots, Session
from api.leased import accepted, add_get_and_cancel, queued
from api.pagination import IdPath, PageLimit
from chatpgt.db.ids import MAX_ID
from chatpgt.evaluation import service
from chatpgt.evaluation.schemas import EvalRequest, EvalRunOut, EvalRunPage

router = APIRouter(tags=["evaluation"])


@router.post("/eval/runs", **accepted(EvalRunOut, 400, 403))
async def submit_eval(
    body: EvalRequest, session: Session, settings: AppSettings, enqueue: Queue, roots: Roots
) -> EvalRunOut:
    """Queue an evaluation of ``models`` on the held-out essays of their lineage."""
    run = await service.submit(session, settings, body, roots=roots)
    return await queued(session, enqueue, service.TASK_NAME, run.id, service.get_run)


@router.get("/eval/runs", response_model=EvalRunPage)
async def list_eval_runs(
    session: Session,
    limit: PageLimit,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
) -> EvalRunPage:
    """Evaluation runs, newest first."""
    return await service.list_runs(session, limit=limit, before=before, status=status)


add_get_and_cancel(
    router, "/eval/runs", "eval_run", EvalRunOut, service.get_run, service.cancel_run
)


@router.get(
    "/eval/runs/{run_id}/report",
    response_class=FileResponse,
    responses={**problems.responses(404, 409), 200: {"content": {"text/html": {}}}},
)
async def get_eval_report(
    run_id: IdPath, session: Session, format: Literal["html", "json"] = "html"
) -> FileResponse:
    """The run's report: one self-contained HTML page (default) or ``?format=json``."""
    path = await service.report_path(session, run_id, format)
    media = "text/html; charset=utf-8" if format == "html" else "application/json"
    return FileResponse(path, media_type=media)
