"""Using a trained model: its card, generations, the archive. Thin: parse, call
chatpgt.serving.service."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from api import problems
from api.deps import Queue, Session
from api.leased import accepted
from api.pagination import IdPath
from chatpgt.orchestration.tasks import GENERATE
from chatpgt.serving import service
from chatpgt.serving.schemas import GenerationCreate, GenerationOut

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
    "/models/{model_id}/archive",
    response_class=StreamingResponse,
    responses={**problems.responses(404, 409), 200: {"content": {"application/x-tar": {}}}},
)
async def get_model_archive(model_id: IdPath, session: Session) -> StreamingResponse:
    """The model's folder as a tar stream (``<name>/config.json``, weights, tokenizer, chat
    template, and the card as of now as README.md): ``tar -xf`` it and load the folder with
    ``AutoModelForCausalLM.from_pretrained``."""
    filename, chunks = await service.model_archive(session, model_id)
    return StreamingResponse(
        chunks,
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
