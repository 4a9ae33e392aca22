"""The blind playground's pages (``/ui/playground``) and the models' (``/ui/models``). Thin:
parse the form, call chatpgt.serving, render. Same sign-in, CSRF and scopes as the review pages
(api.ui.gate: a read key sees the pages and the win rates, posts nothing)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response

from api.deps import Queue, Session
from api.pagination import IdPath
from api.routers.labels import reviewer_of
from api.ui import session as ui_session
from api.ui.routes import _form, _form_redirect, page
from api.ui.session import CSRF_FIELD
from chatpgt.orchestration.tasks import GENERATE
from chatpgt.serving import arena, service

router = APIRouter(prefix="/ui/playground", include_in_schema=False)
models_router = APIRouter(prefix="/ui/models", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def playground(request: Request, session: Session) -> Response:
    models = await arena.servable_models(session)
    _, rates = await arena.win_rates(session)
    titles = await arena.heldout_titles(session)
    return page(
        request, "playground.html", {"models": models, "rates": rates, "heldout_titles": titles}
    )


@router.post("", response_class=HTMLResponse)
async def start_battle(request: Request, session: Session, enqueue: Queue) -> Response:
    form = await request.form()
    ui_session.check_csrf(request, str(form.get(CSRF_FIELD) or ""))
    await _form(request)  # the NUL check of every text field
    try:
        # The third model is optional: its select's empty choice leaves it out.
        model_ids = [int(str(v)) for v in form.getlist("model") if str(v).strip()]
        max_new_tokens = int(str(form.get("max_new_tokens") or arena.DEFAULT_MAX_NEW_TOKENS))
    except ValueError:
        raise RequestValidationError(
            [{"loc": ("body", "model"), "msg": "Input should be a model id", "type": "int"}]
        ) from None
    if not 1 <= max_new_tokens <= 8192:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "max_new_tokens"),
                    "msg": "Input should be 1 to 8192",
                    "type": "value_error",
                }
            ]  # fmt: skip
        )
    battle, generation_ids = await arena.create_battle(
        session,
        title=str(form.get("title") or ""),
        model_ids=model_ids,
        reviewer=reviewer_of(request),
        max_new_tokens=max_new_tokens,
    )
    await session.commit()
    for generation_id in generation_ids:
        await enqueue(GENERATE, generation_id)
    return _form_redirect(f"/ui/playground/battles/{battle.id}")


def _battle_context(view: arena.BattleView) -> dict[str, object]:
    """The vote buttons: one per essay ("A is better" of two, "A is best" of three), then tie."""
    word = "better" if len(view.sides) == 2 else "best"
    votes = [(s.position, s.position.lower(), f"{s.position} is {word}") for s in view.sides]
    return {"battle": view, "votes": [*votes, ("tie", "t", "Tie")]}


@router.get("/battles/{battle_id}", response_class=HTMLResponse)
async def battle_page(battle_id: IdPath, request: Request, session: Session) -> Response:
    view = await arena.battle_view(session, battle_id)
    return page(request, "battle.html", _battle_context(view))


@router.get("/battles/{battle_id}/essays", response_class=HTMLResponse)
async def battle_essays(battle_id: IdPath, request: Request, session: Session) -> Response:
    """The essays part of the page, polled by htmx until both are written."""
    view = await arena.battle_view(session, battle_id)
    return page(request, "_battle.html", _battle_context(view))


@router.post("/battles/{battle_id}/vote", response_class=HTMLResponse)
async def vote(battle_id: IdPath, request: Request, session: Session) -> Response:
    form = await _form(request)
    ui_session.check_csrf(request, form.get(CSRF_FIELD))
    await arena.vote(session, battle_id, form.get("choice", ""), reviewer_of(request))
    await session.commit()
    return _form_redirect(f"/ui/playground/battles/{battle_id}")


@models_router.get("", response_class=HTMLResponse)
async def models_page(request: Request, session: Session) -> Response:
    """Every registered model with its lineage parent and whether its folder is here, and the
    human win rates."""
    models = await arena.registered_models(session)
    servable = {m.id for m in await arena.servable_models(session)}
    _, rates = await arena.win_rates(session)
    names = {m.id: m.name for m in models}
    context = {"models": models, "servable": servable, "rates": rates, "names": names}
    return page(request, "models.html", context)


@models_router.get("/{model_id}", response_class=HTMLResponse)
async def model_page(model_id: IdPath, request: Request, session: Session) -> Response:
    """One model's card as text (404 for an unknown model)."""
    model = await service.resolve_model(session, model_id)
    card = await service.model_card(session, model_id)
    return page(request, "model.html", {"model": model, "card": card})
