"""RFC 9457 problem+json for every error the API returns."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatpgt.db.session import is_unavailable
from chatpgt.errors import ChatPGTError

PROBLEM_JSON = "application/problem+json"
# Seconds a client is told to wait when the database is unreachable (restarting, failing over).
DB_UNAVAILABLE_RETRY_AFTER_S = 2
_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetail"}


class ProblemResponse(JSONResponse):
    """problem+json. A refused request may name a key or a tag it was sent, and that text may be
    a lone surrogate no UTF-8 encoder takes: then the body is written with ASCII escapes (the
    same JSON, ``"\\ud800"``), never a 500 in place of the 4xx."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


class ProblemDetail(BaseModel):
    """An RFC 9457 problem. Domain errors add members of their own (``errors`` on a 422, the
    offending ``cursor``, ``path``, ``job_id``, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route that may answer these problem statuses."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": dict(_PROBLEM_REF)}},
        }
        for status in statuses
    }


def _document_problems(schema: dict[str, Any]) -> None:
    """FastAPI documents every 422 as JSON ``HTTPValidationError``; ours is a problem+json."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ProblemDetail"] = ProblemDetail.model_json_schema()
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            # Any route may answer 400: an unknown query parameter (api.inputs).
            operation.setdefault("responses", {}).setdefault("400", responses(400)[400])
            if "422" in operation.get("responses", {}):
                operation["responses"]["422"] = responses(422)[422]
            if "requestBody" in operation:  # api.limits.BodySizeLimit
                operation["responses"].setdefault("413", responses(413)[413])
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def problem(
    status: int,
    detail: str,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


def install(app: FastAPI, *completions: Callable[[dict[str, Any]], None]) -> None:
    """Map errors to problem+json and say so in the OpenAPI schema; ``completions`` complete
    the document further, once (api.openapi)."""
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_openapi()
            _document_problems(schema)
            for complete in completions:
                complete(schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ChatPGTError)
    async def _domain(request: Request, exc: ChatPGTError) -> JSONResponse:
        return from_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": _message(e), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(422, UNREADABLE_BODY, errors=errors)
        return problem(422, "The request does not match the schema.", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if (unreadable := unreadable_body(exc)) is not None:
            return unreadable
        headers = exc.headers
        if exc.status_code == 405:
            # The router names the methods of the first route on this path only; Allow must
            # list every method the path has (GET and POST /topics are two routes).
            headers = {**(headers or {}), "Allow": ", ".join(_methods_of(app, request.url.path))}
        return problem(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(OSError)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            raise exc
        return database_unavailable()


UNREADABLE_BODY = "The request body is not readable JSON."


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", ""))
    if error.get("type") == "json_invalid" and (reason := (error.get("ctx") or {}).get("error")):
        return f"{msg}: {reason}"  # FastAPI keeps the parser's reason ("Expecting value") here
    return msg


# FastAPI's answer when a JSON body cannot be read at all (bytes that are not UTF-8, nesting
# deeper than the parser's recursion); malformed JSON is a RequestValidationError instead.
_BODY_PARSE_FAILED = "There was an error parsing the body"


def unreadable_body(exc: StarletteHTTPException) -> JSONResponse | None:
    """A body that is not readable JSON is a 422, like malformed JSON: one kind of mistake, one
    status (docs/architecture.md, "What a request may hold"). None for any other HTTP error."""
    cause = exc.__cause__
    if exc.status_code != 400 or exc.detail != _BODY_PARSE_FAILED or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        error = {
            "loc": ["body", cause.start],
            "msg": f"JSON decode error: the body is not {cause.encoding.upper()} "
            f"(byte {cause.start})",
            "type": "json_invalid",
        }
    elif isinstance(cause, RecursionError):
        error = {
            "loc": ["body"],
            "msg": "JSON decode error: nested too deeply",
            "type": "json_invalid",
        }
    else:
        error = {"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}
    return problem(422, UNREADABLE_BODY, errors=[error])


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
        if included is not None:
            yield from _api_routes(included.routes)


def _methods_of(app: FastAPI, path: str) -> list[str]:
    methods = {
        method
        for route in _api_routes(app.routes)
        if route.path_regex.match(path)
        for method in route.methods
    }
    return sorted(methods)


def from_error(exc: ChatPGTError) -> JSONResponse:
    """The problem for a typed error; a refused key adds its WWW-Authenticate challenge
    (chatpgt.auth.errors)."""
    headers = getattr(exc, "headers", None)
    return problem(exc.status_code, exc.detail, exc.title, headers, **exc.extra)


def database_unavailable() -> JSONResponse:
    """The database is down or restarting: a 503 the client may retry, not a 500."""
    return problem(
        503,
        "The database cannot be reached right now; retry shortly.",
        "Service unavailable",
        headers={"Retry-After": str(DB_UNAVAILABLE_RETRY_AFTER_S)},
    )
