"""``GET /pairs`` answered before the framework: a pure ASGI middleware, :class:`PageLane`.

A page of pairs is the API's most frequent call, and FastAPI's routing and dependency solving
(the app-wide dependencies, ten query parameters each validated through pydantic, the session
dependency) cost about as much CPU as the page's query and its encoding together. The lane
answers a ``GET /pairs`` whose query string it can read with certainty, and hands every other
request on unchanged:

- it sits inside the key check (``api.auth.KeyCheck``): a request reaches it only with a key the
  route would accept;
- it takes only the parameters the route declares, each given once (``job_id`` may repeat),
  each in a plain form the route reads the same way (digits for ids and ``limit``, a decimal for
  ``min_confidence`` and ``dedup_threshold`` within their ranges, a known ``source``, text that
  Postgres can store). Anything else, an unknown parameter, a bad cursor, a repeated value, a
  form it does not know, goes on to the route, which answers it (its problem+json included)
  exactly as before;
- it answers with the route's own service call (``chatpgt.pairs.service.pairs_page_json``) on a
  connection of the app's pool, outside any transaction (one statement, one round trip), and
  with the route's headers: the same bytes.

``CHATPGT_API_PAGE_LANE=false`` turns it off (every page then goes through the route).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.exc import DBAPIError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems
from chatpgt.db.ids import MAX_ID
from chatpgt.db.keyset import decode_cursor
from chatpgt.db.session import is_unavailable
from chatpgt.db.text import unstorable
from chatpgt.errors import InvalidInput
from chatpgt.pairs import service
from chatpgt.pairs.repository import PairFilters
from chatpgt.pairs.schemas import PairSource

PATH = "/pairs"
JSON = "application/json"
DEFAULT_LIMIT = 50  # api.pagination.DEFAULT_PAGE_SIZE
SOURCES = frozenset(PairSource.__args__)  # type: ignore[attr-defined]
# Forms every reader (Python's float and int, pydantic's lax parsing) takes alike.
_ID = re.compile(r"[1-9][0-9]{0,18}")
_DECIMAL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,12})?")


class _NotPlain(Exception):
    """The query string is not one the lane reads: the route answers."""


def _decimal(value: str, low: float, high: float, *, low_open: bool = False) -> float:
    if _DECIMAL.fullmatch(value) is None:
        raise _NotPlain
    number = float(value)
    if number > high or number < low or (low_open and number == low):
        raise _NotPlain
    return number


def _text(value: str) -> str:
    if not value or unstorable(value) is not None:
        raise _NotPlain
    return value


def read_query(
    pairs: Iterable[tuple[str, str]], max_limit: int
) -> tuple[PairFilters, int, str | None]:
    """The route's filters, page size and cursor from the decoded query parameters; raises
    _NotPlain where the route, not the lane, must read them."""
    min_confidence = dedup_threshold = None
    model = source = cursor = None
    limit: int | None = None
    job_ids: list[int] = []
    for name, value in pairs:
        if name == "job_id":
            if _ID.fullmatch(value) is None or int(value) > MAX_ID:
                raise _NotPlain
            job_ids.append(int(value))
        elif name == "min_confidence" and min_confidence is None:
            min_confidence = _decimal(value, 0, 10)
        elif name == "limit" and limit is None:
            if _ID.fullmatch(value) is None or int(value) > max_limit:
                raise _NotPlain
            limit = int(value)
        elif name == "cursor" and cursor is None:
            cursor = _text(value)
            try:
                decode_cursor(cursor)
            except InvalidInput:
                raise _NotPlain from None
        elif name == "model" and model is None:
            model = _text(value)
        elif name == "source" and source is None:
            if value not in SOURCES:
                raise _NotPlain
            source = value
        elif name == "dedup_threshold" and dedup_threshold is None:
            dedup_threshold = _decimal(value, 0, 1, low_open=True)
        else:  # unknown, or given twice
            raise _NotPlain
    filters = PairFilters(
        min_confidence=min_confidence,
        job_ids=tuple(dict.fromkeys(job_ids)),
        model=model,
        source=source,
        dedup_threshold=dedup_threshold,
    )
    return filters, DEFAULT_LIMIT if limit is None else limit, cursor


class PageLane:
    """ASGI middleware: ``GET /pairs`` with a plain query string, answered without routing or
    dependency solving (module docstring); every other request passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        state: Any = scope["app"].state
        try:
            query = scope["query_string"].decode("latin-1")  # as Starlette reads it
            filters, limit, cursor = read_query(
                parse_qsl(query, keep_blank_values=True), state.settings.api_max_page_size
            )
        except _NotPlain:
            await self.app(scope, receive, send)
            return
        try:
            async with state.engine.connect() as connection:
                body = await service.pairs_page_json(
                    connection, filters, limit=limit, cursor=cursor
                )
        except (DBAPIError, OSError) as exc:
            if not is_unavailable(exc):
                raise
            await problems.database_unavailable()(scope, receive, send)
            return
        await Response(body, media_type=JSON)(scope, receive, send)


def install(app: Any, enabled: bool) -> None:
    """Put the lane in front of the routes (call before ``api.auth.install``, so that the key
    check stays in front of it)."""
    if enabled:
        app.add_middleware(PageLane)
