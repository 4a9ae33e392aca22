"""The review page's cookie session and CSRF tokens.

One cookie, ``chatpgt_ui``: a signed (itsdangerous, HMAC-SHA1 over the app's secret), timed
value holding the session's CSRF token and, once a reviewer signs in with a key, that key's id
(never the key). HttpOnly, SameSite=Lax, Secure when the request came over https. Every form
post carries the CSRF token in a hidden field; a post whose token does not match its session's
is refused (403). Anonymous visitors get a session too, so the sign-in form is protected the
same way.

The key behind a session is looked up again (cached for ``auth_cache_ttl_s``, like a bearer
key), so revoking it ends its sessions.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, cookie_parser
from starlette.responses import Response

from chatpgt.auth.service import Principal
from chatpgt.errors import ChatPGTError

COOKIE = "chatpgt_ui"
CSRF_FIELD = "csrf_token"
SALT = "chatpgt-ui-session"
VIEW_SALT = "chatpgt-ui-view"


class CsrfRefused(ChatPGTError):
    status_code = 403
    title = "Forbidden"


@dataclass(frozen=True)
class UiSession:
    csrf: str
    key_id: int | None = None
    fresh: bool = False  # made by this request: the answer sets the cookie


class Signer:
    """Signs and reads session cookies and the pair view's shown-order tokens."""

    def __init__(self, secret: str, max_age_s: int) -> None:
        self._sessions = URLSafeTimedSerializer(secret, salt=SALT)
        self._views = URLSafeTimedSerializer(secret, salt=VIEW_SALT)
        self.max_age_s = max_age_s

    def read(self, cookie: str | None) -> UiSession | None:
        if not cookie:
            return None
        try:
            data: Any = self._sessions.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        key_id = data.get("key_id")
        return UiSession(csrf=data["csrf"], key_id=key_id if isinstance(key_id, int) else None)

    def dump(self, session: UiSession) -> str:
        return self._sessions.dumps({"csrf": session.csrf, "key_id": session.key_id})

    def view_token(self, pair_id: int, shown_order: str) -> str:
        return self._views.dumps({"pair": pair_id, "order": shown_order})

    def read_view(self, token: str, pair_id: int) -> str | None:
        """The shown order a pair view recorded, or None for a token not made for this pair."""
        try:
            data: Any = self._views.loads(token, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict) or data.get("pair") != pair_id:
            return None
        order = data.get("order")
        return order if order in ("AB", "BA") else None


def new_session(key_id: int | None = None) -> UiSession:
    return UiSession(csrf=secrets.token_urlsafe(32), key_id=key_id, fresh=True)


def current(conn: HTTPConnection) -> UiSession:
    """The request's session (read by the gate), or a new anonymous one."""
    found = conn.scope.get("state", {}).get("ui_session")
    if isinstance(found, UiSession):
        return found
    made = new_session()
    conn.scope.setdefault("state", {})["ui_session"] = made
    return made


def principal(conn: HTTPConnection) -> Principal | None:
    found = conn.scope.get("state", {}).get("api_key")
    return found if isinstance(found, Principal) else None


def check_csrf(conn: HTTPConnection, token: str | None) -> None:
    """Refuse (403) a form post whose CSRF token is missing or not its session's."""
    session = conn.scope.get("state", {}).get("ui_session")
    if not isinstance(session, UiSession) or session.fresh or not token:
        raise CsrfRefused("The form has no valid CSRF token; reload the page and try again.")
    if not hmac.compare_digest(session.csrf.encode(), token.encode()):
        raise CsrfRefused("The form's CSRF token does not match this session; reload the page.")


def set_cookie(response: Response, conn: HTTPConnection, signer: Signer, s: UiSession) -> None:
    response.set_cookie(
        COOKIE,
        signer.dump(s),
        max_age=signer.max_age_s,
        path="/ui",
        httponly=True,
        samesite="lax",
        secure=conn.url.scheme == "https",
    )


def cookie_from_headers(headers: Headers) -> str | None:
    raw = headers.get("cookie")
    return cookie_parser(raw).get(COOKIE) if raw else None
