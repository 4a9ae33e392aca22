"""Using a trained model: its card, generations, the archive. Thin: parse, call
chatpgt.serving.service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import Field

from api import problems
from api.deps import Queue, Session
from api.leased import accepted
from api.pagination import MAX_ID, IdPath
from chatpgt.orchestration.tasks import GENERATE
from chatpgt.serving import arena, service
from chatpgt.serving.schemas import GenerationCreate, GenerationOut, WinRates

router = APIRouter(tags=["models"])


@router.get(
    "/models/{model_id}/card",
    response_class=PlainTextResponse,
    responses={**problems.responses(404), 200: {"content": {"text/markdown": {}}}},
)
async def get_model_card(model_id: IdPath, session: Session) -> PlainTextResponse:
    """The model's Hugging Face card (README.md): YAML metadata with the latest evaluation's
    results in ``model-index``, then recipe, data, lineage and evaluation table."""
    text = await service.model_card(session, model_id)
    return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")


@router.post("/models/{model_id}/generations", **accepted(GenerationOut, 400, 404, 409))
async def submit_generation(
    model_id: IdPath, body: GenerationCreate, session: Session, enqueue: Queue, response: Response
) -> GenerationOut:
    """Ask the model for ``n`` essays (a title, or messages); a gpu worker generates them. Poll
    the ``Location`` until ``status`` is terminal."""
    row = await service.submit_generation(session, model_id, body)
    await session.commit()
    await enqueue(GENERATE, row.id)
    response.headers["Location"] = f"/models/{model_id}/generations/{row.id}"
    return await service.get_generation(session, model_id, row.id)


@router.get(
    "/models/{model_id}/generations/{generation_id}",
    response_model=GenerationOut,
    responses=problems.responses(404),
)
async def get_generation(
    model_id: IdPath, generation_id: IdPath, session: Session
) -> GenerationOut:
    return await service.get_generation(session, model_id, generation_id)


@router.get(
    "/models/{model_id}/generations/{generation_id}/events",
    response_class=StreamingResponse,
    responses={**problems.responses(404), 200: {"content": {"text/event-stream": {}}}},
)
async def generation_events(
    model_id: IdPath, generation_id: IdPath, request: Request, session: Session
) -> StreamingResponse:
    """The essays as the model writes them, as server-sent events: ``delta`` (``{"index",
    "text"}`` to append), ``replace`` (the essay so far), then ``done`` with the whole request
    (the same body as a poll), and the stream ends."""
    await service.get_generation(session, model_id, generation_id)  # 404 before the stream
    events = service.generation_events(request.app.state.sessionmaker, model_id, generation_id)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/models/{model_id}/archive",
    response_class=StreamingResponse,
    responses={**problems.responses(404, 409), 200: {"content": {"application/x-tar": {}}}},
)
async def get_model_archive(
    model_id: IdPath,
    session: Session,
    adapter: Annotated[
        bool,
        Query(
            description="the run's LoRA adapter (for peft) instead of the merged model; 409 "
            "for a model trained without LoRA"
        ),
    ] = False,
) -> StreamingResponse:
    """The model's folder as a tar stream (``<name>/config.json``, weights, tokenizer, chat
    template, and the card as of now as README.md): ``tar -xf`` it and load the folder with
    ``AutoModelForCausalLM.from_pretrained`` (with ``adapter``, ``<name>-adapter/``: load it
    with peft's ``AutoPeftModelForCausalLM``)."""
    filename, chunks = await service.model_archive(session, model_id, adapter=adapter)
    return StreamingResponse(
        chunks,
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/arena/win-rates", response_model=WinRates)
async def get_win_rates(
    session: Session,
    model_id: Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None,
        Query(description="only votes between two of these models (repeat the parameter)"),
    ] = None,
) -> WinRates:
    """Human win rates from the playground's blind votes (``/ui/playground``): per pair of
    models, the wins each way, the ties and the first model's win rate with its Wilson
    interval."""
    votes, rates = await arena.win_rates(session, model_id or ())
    return WinRates.model_validate({"votes": votes, "items": [r.as_dict() for r in rates]})
