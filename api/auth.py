"""API keys on every route but the health check: one app-wide dependency.

The decision is :class:`chatpgt.auth.service.AccessControl`'s (made in the lifespan, kept on
``app.state.access``); this module reads the ``Authorization: Bearer`` header and the peer address,
and documents the scheme and the 401/403 answers in the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import problems
from api.routers import health
from chatpgt.auth.service import AccessControl

# The health check stays open (load balancers and `docker compose` probe it without a key), as do
# the OpenAPI schema and docs, which FastAPI serves outside the routes' dependencies.
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


async def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """App-wide dependency: 401 without a valid key where one is needed, 403 for a read key on a
    write route. The key's principal, if any, is left on ``request.state.api_key``."""
    route = request.scope.get("route")
    if getattr(route, "path", None) in OPEN_PATHS:
        return
    access: AccessControl = request.app.state.access
    request.state.api_key = await access.check(
        key=credentials.credentials if credentials else None,
        method=request.method,
        peer=request.client.host if request.client else None,
    )


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
    """Document the 401/403 answers in the OpenAPI schema (after ``problems.install``)."""
    build_openapi: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document(build_openapi())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
