"""Who may use the review page: the key check for ``/ui`` requests that carry no bearer key.

Called by :class:`api.auth.KeyCheck`. The principal is the signed-in session's key (looked up
by id, so a revoked key's sessions end); without one, the page is open where the API is open
(auth ``auto`` on loopback: the reviewer is "local"), and otherwise a GET is sent to the
sign-in page and anything else is a 401. A read key may view every page but posts nothing but
sign-in and sign-out (403 problem+json).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from api import problems
from api.ui.session import Signer, UiSession, cookie_from_headers
from chatpgt.auth.errors import InsufficientScope, Unauthenticated
from chatpgt.auth.service import AccessControl, Principal, scope_allows

PREFIX = "/ui"
# Reachable without signing in; sign-in and sign-out change only the session itself.
OPEN = frozenset({"/ui/login", "/ui/logout"})
STATIC = "/ui/static/"


def is_ui(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def check(scope: Scope) -> Response | None:
    """Leave the request's session and principal on its state; the answer to send instead of
    the page when the request may not proceed (None when it may)."""
    access: AccessControl = scope["app"].state.access
    signer: Signer = scope["app"].state.ui_signer
    path: str = scope["path"]
    session = signer.read(cookie_from_headers(Headers(scope=scope)))
    who: Principal | None = None
    if session is not None and session.key_id is not None:
        who = await access.verifier.verify_id(session.key_id)
        if who is None:  # revoked since sign-in: the session is anonymous again
            session = UiSession(csrf=session.csrf)
    state = scope.setdefault("state", {})
    if session is not None:
        state["ui_session"] = session
    state["api_key"] = who
    if path in OPEN or path.startswith(STATIC):
        return None
    client = scope.get("client")
    if who is None and access.policy.key_needed(client[0] if client else None):
        if scope["method"] in ("GET", "HEAD"):
            target = path + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
            return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)
        return problems.from_error(Unauthenticated("Sign in on /ui/login with an API key first."))
    if who is not None and not scope_allows(who.scope, scope["method"]):
        refused = InsufficientScope(
            f"The API key {who.name!r} is read-only: it may view the review page, not label.",
            required="write",
        )
        return problems.from_error(refused)
    return None
