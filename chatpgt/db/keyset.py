"""Opaque keyset cursors over a bigint primary key, shared by every paginated list."""

from __future__ import annotations

import base64
import binascii
import re

from chatpgt.errors import InvalidInput

# The same encoding as api/pagination.py, so every list hands out interchangeable cursors.
_PREFIX = "id:"
# The cursors encode_cursor makes, for ids up to 18 digits: "id:" is "aWQ6", then each three
# digits are four base64 characters from these classes, and one or two left over are two or
# three. The OpenAPI document states this pattern, so a fuzzer's "valid" cursor is one the API
# takes; anything else is refused before decoding (a 400).
_TWO = "(?:[MN][DTjz]|O[DT])[AEIMQUYcgk]"  # the first two digits of a group
_THREE = f"{_TWO}[w-z0-5]"
_REST = f"(?:[MN][AQgw]|O[AQ]|{_TWO})"
CURSOR_PATTERN = f"^(?:aWQ6(?:(?:{_THREE}){{1,6}}|(?:{_THREE}){{0,5}}{_REST}))?$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(last_id: int) -> str:
    """The cursor that resumes a list after the row with ``last_id`` (ascending id order)."""
    raw = f"{_PREFIX}{last_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> int | None:
    """The id a cursor resumes after; None for no cursor. Raises InvalidInput on a bad cursor."""
    if cursor is None or cursor == "":
        return None
    if _CURSOR.fullmatch(cursor) is None:
        raise InvalidInput("The cursor is not one this API returned.", cursor=cursor)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_PREFIX):
            raise ValueError(raw)
        value = int(raw[len(_PREFIX) :])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("The cursor is not one this API returned.", cursor=cursor) from None
    if not 0 <= value < 2**63:
        raise InvalidInput("The cursor is not one this API returned.", cursor=cursor)
    return value
