"""API keys on every route but the health check: one ASGI middleware, :class:`KeyCheck`.

The decision is :class:`chatpgt.auth.service.AccessControl`'s (made in the lifespan, kept on
``app.state.access``); this module reads the ``Authorization: Bearer`` header and the peer address
before anything else looks at the request, and documents the scheme and the 401/403 answers in
the OpenAPI schema (``bearer``, an app-wide dependency that only declares the scheme).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.security import HTTPBearer
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems
from api.routers import health
from api.ui import gate as ui_gate
from chatpgt.auth.service import AccessControl
from chatpgt.db.session import is_unavailable
from chatpgt.errors import ChatPGTError

# The health check stays open (load balancers and `docker compose` probe it without a key), as do
# the OpenAPI schema and docs (see _open_paths).
OPEN_PATHS = frozenset(getattr(route, "path", "") for route in health.router.routes)
SCHEME_NAME = "ApiKey"
READ_METHODS = frozenset({"get", "head"})

bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME_NAME,
    bearerFormat="cpgt_<prefix>_<secret>",
    description=(
        "An API key, `Authorization: Bearer cpgt_...`, created with `chatpgt keys create`. "
        "Read keys may call GET routes, write keys every route. Without CHATPGT_AUTH=required, "
        "an API listening on loopback lets clients on the same machine in without a key."
    ),
)


class KeyCheck:
    """ASGI middleware: the key check, before routing, body parsing or validation, so a client
    without a valid key learns nothing but 401 (not even that its JSON is malformed) and costs
    no body read. 401 without a valid key where one is needed, 403 for a read key on a write
    route, 503 when the key cannot be looked up because the database is down. The principal,
    if any, is left on ``request.state.api_key``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _open_paths(scope["app"]):
            await self.app(scope, receive, send)
            return
        access: AccessControl = scope["app"].state.access
        client = scope.get("client")
        key = _bearer_token(Headers(scope=scope).get("authorization"))
        # The review page: without a bearer key, its signed-in session stands for one (api.ui.gate).
        ui = key is None and ui_gate.is_ui(scope["path"])
        refusal = None
        try:
            if ui:
                refusal = await ui_gate.check(scope)
            else:
                principal = await access.check(
                    key=key,
                    method=scope["method"],
                    peer=client[0] if client else None,
                )
        except ChatPGTError as exc:
            await problems.from_error(exc)(scope, receive, send)
            return
        except (DBAPIError, OSError) as exc:
            if not is_unavailable(exc):
                raise
            await problems.database_unavailable()(scope, receive, send)
            return
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if not ui:
            scope.setdefault("state", {})["api_key"] = principal
        await self.app(scope, receive, send)


def _bearer_token(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None for no header or another scheme."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _open_paths(app: FastAPI) -> frozenset[str]:
    """The health check, and the schema and docs FastAPI serves (load balancers and `docker
    compose` probe the former without a key; the schema is public)."""
    served = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    return OPEN_PATHS | {path for path in served if path}


def _document(schema: dict[str, Any]) -> None:
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if path in OPEN_PATHS:
                operation.pop("security", None)
                continue
            answers = operation.setdefault("responses", {})
            answers.setdefault("401", problems.responses(401)[401])
            if method not in READ_METHODS:
                answers.setdefault("403", problems.responses(403)[403])


def install(app: FastAPI) -> None:
    """Check keys on every request, and document the 401/403 answers in the OpenAPI schema
    (after ``problems.install``). Called last, so the check is the outermost middleware."""
    app.add_middleware(KeyCheck)
    build_openapi: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document(build_openapi())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
