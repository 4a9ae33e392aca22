"""Refusals of a request's credentials. Each carries the ``WWW-Authenticate`` header RFC 6750 asks
for; the API sends ``headers`` with the problem+json answer."""

from __future__ import annotations

from chatpgt.errors import ChatPGTError


class Unauthenticated(ChatPGTError):
    """No usable key: none was sent, or it is unknown, malformed, wrong or revoked (401)."""

    status_code = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        super().__init__(detail)
        challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
        self.headers = {"WWW-Authenticate": challenge}


class InsufficientScope(ChatPGTError):
    """A valid key whose scope does not allow the request (a read key on a write route, 403)."""

    status_code = 403
    title = "Forbidden"

    def __init__(self, detail: str, *, required: str) -> None:
        super().__init__(detail, required_scope=required)
        self.headers = {
            "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{required}"'
        }
