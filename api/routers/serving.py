"""Using a trained model: its card, generations, the archive. Thin: parse, call
chatpgt.serving.service."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from api import problems
from api.deps import Session
from api.pagination import IdPath
from chatpgt.serving import service

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
