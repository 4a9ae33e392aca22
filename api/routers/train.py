"""Training runs (SFT, DPO) and the model registry. Thin: parse, call chatpgt.training.service."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api import problems
from api.deps import AppSettings, Queue, Roots, Session
from api.leased import accepted, add_get_and_cancel, queued
from api.pagination import BeforeId, IdPath, PageLimit
from chatpgt.db.ids import MAX_ID
from chatpgt.orchestration.status import RunStatus
from chatpgt.orchestration.tasks import ROUNDS_STEP, training_task
from chatpgt.rounds import service as rounds
from chatpgt.rounds.schemas import RoundsRequest, RoundsRunOut, RoundsRunPage
from chatpgt.training import service
from chatpgt.training.schemas import (
    DPORequest,
    ModelOut,
    ModelPage,
    SFTRequest,
    TrainingRunOut,
    TrainingRunPage,
)

router = APIRouter(tags=["training"])


@router.post("/train/sft", **accepted(TrainingRunOut, 400, 403, 409))
async def submit_sft(
    body: SFTRequest, session: Session, enqueue: Queue, roots: Roots
) -> TrainingRunOut:
    """Queue supervised fine-tuning of ``base_model`` on ``corpus``. A local path outside the
    API's data roots (`CHATPGT_DATA_ROOTS`) is a 403."""
    run = await service.submit_sft(session, body, roots=roots)
    return await queued(session, enqueue, training_task("sft"), run.id, service.get_run)


@router.post("/train/dpo", **accepted(TrainingRunOut, 400, 403, 409))
async def submit_dpo(
    body: DPORequest, session: Session, enqueue: Queue, roots: Roots
) -> TrainingRunOut:
    """Queue DPO of ``model`` on the preference pairs matching ``pairs``. A local model path
    outside the API's data roots (`CHATPGT_DATA_ROOTS`) is a 403."""
    run = await service.submit_dpo(session, body, roots=roots)
    return await queued(session, enqueue, training_task("dpo"), run.id, service.get_run)


@router.get("/train/runs", response_model=TrainingRunPage)
async def list_runs(
    session: Session,
    limit: PageLimit,
    before: BeforeId = None,
    kind: Literal["sft", "dpo"] | None = None,
    status: RunStatus | None = None,
) -> TrainingRunPage:
    """Runs, newest first."""
    return await service.list_runs(session, limit=limit, before=before, kind=kind, status=status)


add_get_and_cancel(
    router,
    "/train/runs",
    "run",
    TrainingRunOut,
    service.get_run,
    service.cancel_run,
    cancel_doc="Stop a run at its next step (a queued run at once); the last checkpoint is kept.",
)


@router.get("/models", response_model=ModelPage)
async def list_models(
    session: Session,
    limit: PageLimit,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="next_after of the last page")
    ] = None,
) -> ModelPage:
    """The registry: base models and every model a run produced, with lineage."""
    return await service.list_models(session, limit=limit, after=after)


@router.get("/models/{model_id}", response_model=ModelOut, responses=problems.responses(404))
async def get_model(model_id: IdPath, session: Session) -> ModelOut:
    return await service.get_model(session, model_id)


# --- on-policy rounds (chatpgt.rounds) ---------------------------------------------------------


@router.post("/train/rounds", **accepted(RoundsRunOut, 400, 403, 409))
async def submit_rounds(
    body: RoundsRequest, session: Session, enqueue: Queue, settings: AppSettings, roots: Roots
) -> RoundsRunOut:
    """Queue K rounds of on-policy DPO from a registered SFT model: datagen with the current
    model among the generators, the judge, DPO from the current model on that round's pairs;
    with ``evaluation``, an eval run of each round's model, stopping once it no longer
    improves. A style.other_essays file outside the API's data roots is a 403."""
    run = await rounds.submit(session, settings, body, roots=roots)
    return await queued(session, enqueue, ROUNDS_STEP, run.id, rounds.get_run)


@router.get("/train/rounds", response_model=RoundsRunPage)
async def list_rounds(
    session: Session,
    limit: PageLimit,
    before: BeforeId = None,
) -> RoundsRunPage:
    """Rounds runs, newest first."""
    return await rounds.list_runs(session, limit=limit, before=before)


add_get_and_cancel(
    router,
    "/train/rounds",
    "rounds",
    RoundsRunOut,
    rounds.get_run,
    rounds.cancel,
    get_doc="A rounds run with each round's datagen job, DPO run, model and pair counts.",
    cancel_doc="Stop a rounds run: its next step cancels the current datagen job, DPO run or "
    "eval run.",
)
