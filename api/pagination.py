"""Opaque keyset cursors and id path parameters shared by the list routes."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import Path

from chatpgt.errors import InvalidInput

MAX_ID = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def encode_cursor(last_id: int | None) -> str | None:
    if last_id is None:
        return None
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id a page continues from; a cursor this API did not make is a 400."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        last = int(value)
        if prefix != "id" or not 0 <= last <= MAX_ID:
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("invalid cursor: pass next_cursor from a previous page") from None
    return last
