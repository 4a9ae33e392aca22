"""A cap on request body size, answered with a 413 problem+json before the body is read.

A declared ``Content-Length`` over the cap is refused at once, without reading a byte of it; a
chunked body is counted as it arrives and refused as soon as it passes the cap (the route never
sees it, so nothing is written). Pure ASGI, so a body within the cap is passed through untouched.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem


def _too_large_detail(limit: int) -> str:
    return (
        f"The request body is larger than this API accepts ({limit} bytes, "
        "CHATPGT_API_MAX_BODY_BYTES); send fewer items per request."
    )


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = problem(413, _too_large_detail(self.max_bytes), max_bytes=self.max_bytes)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the route's body read: FastAPI re-raises HTTPExceptions, and
                    # the problem+json handler answers it (api.problems).
                    raise HTTPException(413, _too_large_detail(self.max_bytes))
            return message

        await self.app(scope, counted, send)
