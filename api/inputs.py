"""A rule every request obeys, whatever the route: no NUL character in any text.

Postgres ``text`` cannot hold U+0000, so a NUL that reaches a query is a database error (a 500).
It is refused up front as a 422, like any other input that does not match the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

NUL = "\x00"
_JSON_NUL = b"\\u0000"  # how JSON spells it; a raw NUL byte is invalid JSON already


def _nul_locations(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        if NUL in value:
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                yield loc
            yield from _nul_locations(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_locations(item, (*loc, index))


async def reject_nul(request: Request) -> None:
    """App-wide dependency: a 422 naming every path, query or body field that holds a NUL."""
    locations = [("path", name) for name, v in request.path_params.items() if NUL in str(v)]
    locations += [("query", name) for name, v in request.query_params.multi_items() if NUL in v]
    body = await request.body()
    if _JSON_NUL in body:
        try:
            locations += _nul_locations(json.loads(body), ("body",))
        except ValueError:
            pass  # not JSON: the route's own validation answers
    if locations:
        raise RequestValidationError(
            [
                {"loc": loc, "msg": "Text must not contain NUL (\\u0000)", "type": "string_nul"}
                for loc in locations
            ]
        )
