"""The review page's routes. Thin like every route: parse, call one chatpgt service, render.

GETs render pages; every POST is a form with the session's CSRF token (api.ui.session).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from api.deps import Session
from api.inputs import unstorable_errors
from api.pagination import IdPath
from api.routers.labels import reviewer_of
from api.ui import HERE, plots
from api.ui import session as ui_session
from api.ui.session import CSRF_FIELD, CsrfRefused, Signer
from chatpgt.datagen import service as datagen
from chatpgt.datagen import service as datagen_service
from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.errors import InvalidInput
from chatpgt.pairs.repository import PairFilters
from chatpgt.review import service
from chatpgt.review.repository import ReviewFilters
from chatpgt.review.schemas import DEFAULT_MIN_LABELS, DEFAULT_TARGET, NOTE_MAX_CHARS, LabelIn

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
PAGE_SIZE = 25
CHOICES = (("A", "a", "A is better"), ("B", "b", "B is better"), ("tie", "t", "Tie"),
           ("bad", "x", "Bad pair"))  # fmt: skip
KINDS = ("judged", "corpus")
LABEL_STATES = ("unlabelled", "labelled", "mine", "not_mine")
CONSENSUS = ("chosen", "rejected", "tie", "bad")


def _signer(request: Request) -> Signer:
    signer: Signer = request.app.state.ui_signer
    return signer


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a page; a visitor without a session gets one (and its CSRF token) here."""
    s = ui_session.current(request)
    who = ui_session.principal(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "csrf": s.csrf,
            "csrf_field": CSRF_FIELD,
            "who": who,
            "reviewer": reviewer_of(request),
            "can_label": who is None or who.scope == "write",
            **context,
        },
        status_code=status,
    )
    if s.fresh:
        ui_session.set_cookie(response, request, _signer(request), s)
    return response


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", field), "msg": message, "type": "value_error"}]
    )


def _number(field: str, raw: str | None, low: float, high: float) -> float | None:
    """A number from a GET form field; an empty field is None."""
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(field, "Input should be a number") from None
    if not low <= value <= high:
        raise _invalid(field, f"Input should be between {low:g} and {high:g}")
    return value


def _choice(field: str, raw: str | None, allowed: tuple[str, ...]) -> str | None:
    if not raw:
        return None
    if raw not in allowed:
        raise _invalid(field, f"Input should be one of {', '.join(allowed)}")
    return raw


def _form_redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- sign-in --------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path on the review page: never an open redirect."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui/pairs"


@router.get("", response_class=HTMLResponse)
async def home() -> RedirectResponse:
    return _form_redirect("/ui/pairs")


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    return page(request, "login.html", {"next": _safe_next(next), "error": None})


async def _form(request: Request) -> dict[str, str]:
    """The posted form's text fields; one Postgres cannot store (a NUL) is a 422 naming it."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if errors := unstorable_errors([(("body", k), v) for k, v in fields.items()]):
        raise RequestValidationError(errors)
    return fields


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Sign in with an API key: the session keeps the key's id (never the key), and gets a new
    CSRF token."""
    form = await _form(request)
    ui_session.check_csrf(request, form.get(CSRF_FIELD))
    key = form.get("key", "").strip()[:512]
    who = await request.app.state.access.verifier.verify(key) if key else None
    if who is None:
        context = {"next": _safe_next(form.get("next")), "error": "That key is invalid or revoked."}
        return page(request, "login.html", context, status=401)
    response = _form_redirect(_safe_next(form.get("next")))
    ui_session.set_cookie(response, request, _signer(request), ui_session.new_session(who.key_id))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    ui_session.check_csrf(request, (await _form(request)).get(CSRF_FIELD))
    response = _form_redirect("/ui/login")
    ui_session.set_cookie(response, request, _signer(request), ui_session.new_session())
    return response


# --- pairs ----------------------------------------------------------------------------------


@router.get("/pairs", response_class=HTMLResponse)
async def pairs_list(
    request: Request,
    session: Session,
    job_id: Annotated[str | None, Query(max_length=20)] = None,
    min_confidence: Annotated[str | None, Query(max_length=20)] = None,
    max_confidence: Annotated[str | None, Query(max_length=20)] = None,
    kind: Annotated[str | None, Query(max_length=20)] = None,
    labels: Annotated[str | None, Query(max_length=20)] = None,
    consensus: Annotated[str | None, Query(max_length=20)] = None,
    flipped: Annotated[str | None, Query(max_length=5)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    job = _number("job_id", job_id, 1, 2**62)
    selection = ReviewFilters(
        pairs=PairFilters(
            min_confidence=_number("min_confidence", min_confidence, 0, 10),
            job_ids=(int(job),) if job is not None else (),
            source=_choice("kind", kind, KINDS),
        ),
        max_confidence=_number("max_confidence", max_confidence, 0, 10),
        topic=(q or "").strip() or None,
        flipped=bool(flipped),
        labels=_choice("labels", labels, LABEL_STATES),
        consensus=_choice("consensus", consensus, CONSENSUS),
        reviewer=reviewer_of(request),
    )
    rows, next_cursor = await service.review_page(
        session, selection, limit=PAGE_SIZE, cursor=cursor
    )
    params = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    next_url = f"/ui/pairs?{urlencode({**params, 'cursor': next_cursor})}" if next_cursor else None
    return page(
        request,
        "pairs.html",
        {"rows": rows, "params": params, "next_url": next_url, "first_page": cursor is None},
    )


def _sides(pair: Any, shown_order: str) -> list[dict[str, Any]]:
    """The two essays as shown, left (A) first."""

    def essay(role: str) -> dict[str, Any]:
        text = getattr(pair, role)
        return {
            "text": text,
            "chars": getattr(pair, f"{role}_chars"),
            "words": len(text.split()),
            "model": getattr(pair, f"{role}_model"),
            "generation_id": getattr(pair, f"{role}_generation_id"),
            "is_chosen": role == "chosen",
        }

    first, second = ("chosen", "rejected") if shown_order == "AB" else ("rejected", "chosen")
    return [{"position": "A", **essay(first)}, {"position": "B", **essay(second)}]


def _verdicts(pair: Any, sides: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The judge's verdicts, with the winner named by its position on this reviewer's screen."""
    by_generation = {s["generation_id"]: s["position"] for s in sides}
    out = []
    for v in pair.verdicts or []:
        judge_first = "chosen" if v.get("order") == "AB" else "rejected"
        first_position = next(
            s["position"] for s in sides if s["is_chosen"] == (judge_first == "chosen")
        )
        out.append(
            {
                "shown_first": first_position,
                "winner": by_generation.get(v.get("winner_generation_id"), "?"),
                "confidence": v.get("confidence"),
                "reasoning": v.get("reasoning"),
            }
        )
    return out


@router.get("/pairs/{pair_id}", response_class=HTMLResponse)
async def pair_page(pair_id: IdPath, request: Request, session: Session) -> Response:
    """One pair. The side each essay is shown on is drawn at random for every view (and signed
    into the label form, so the label records what was shown); once the reviewer has labelled
    the pair, it keeps the order they labelled it in, and the models and verdicts are shown."""
    view = await service.pair_view(session, pair_id, reviewer=reviewer_of(request))
    shown_order = view.mine.shown_order if view.mine else secrets.choice(("AB", "BA"))
    context = {
        **_pair_context(view, shown_order),
        "view_token": _signer(request).view_token(pair_id, shown_order),
        "choices": CHOICES,
        "note_max": NOTE_MAX_CHARS,
    }
    return page(request, "pair.html", context)


def _pair_context(view: service.PairView, shown_order: str) -> dict[str, Any]:
    sides = _sides(view.pair, shown_order)
    return {
        "pair": view.pair,
        "view": view,
        "shown_order": shown_order,
        "sides": sides,
        "verdicts": _verdicts(view.pair, sides),
    }


@router.post("/pairs/{pair_id}/label", response_class=HTMLResponse)
async def label_pair(pair_id: IdPath, request: Request, session: Session) -> Response:
    """Label from the page: the shown order comes from the signed view token, not the form."""
    form = await _form(request)
    ui_session.check_csrf(request, form.get(CSRF_FIELD))
    shown_order = _signer(request).read_view(form.get("view", ""), pair_id)
    if shown_order is None:
        raise InvalidInput("The page's view token is not for this pair; reload the pair.")
    note = form.get("note", "").strip() or None
    try:
        label = LabelIn(choice=form.get("choice"), shown_order=shown_order, note=note)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    await service.put_label(session, pair_id, label, reviewer=reviewer_of(request))
    await session.commit()
    if request.headers.get("hx-request") != "true":
        return _form_redirect(f"/ui/pairs/{pair_id}")
    result = await service.pair_view(session, pair_id, reviewer=reviewer_of(request))
    return page(request, "_reveal.html", _pair_context(result, shown_order))


# --- jobs -----------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_list(
    request: Request, session: Session, cursor: Annotated[str | None, Query(max_length=200)] = None
) -> Response:
    jobs, last = await datagen.list_job_views(
        session, status=None, before_id=decode_cursor(cursor), limit=PAGE_SIZE
    )
    next_url = f"/ui/jobs?cursor={encode_cursor(last)}" if last else None
    return page(request, "jobs.html", {"jobs": jobs, "next_url": next_url})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: IdPath, request: Request, session: Session) -> Response:
    job = await datagen.get_job_view(session, job_id)
    matchups, flips = await datagen_service.judge_flip_counts(session, [job_id])
    return page(
        request,
        "job.html",
        {"job": job, "matchups": matchups, "flips": flips, "judge": job.request.get("judge")},
    )


# --- calibration ----------------------------------------------------------------------------


@router.get("/calibration", response_class=HTMLResponse)
async def calibration_page(
    request: Request,
    session: Session,
    target: Annotated[float, Query(ge=0, le=1)] = DEFAULT_TARGET,
    min_labels: Annotated[int, Query(ge=1, le=1_000_000)] = DEFAULT_MIN_LABELS,
) -> Response:
    result = await service.calibration(session, target=target, min_labels=min_labels)
    plotted = [(judge, plots.agreement_svg(judge, target)) for judge in result.judges]
    return page(request, "calibration.html", {"cal": result, "plotted": plotted})


__all__ = ["CsrfRefused", "router"]
