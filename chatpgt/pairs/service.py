"""Serving pairs: keyset pages and single pairs, as ready-to-send JSON bytes.

The bodies are built once with orjson from plain rows (no per-row pydantic model); the JSONB
columns are embedded as the text Postgres returns. The shapes are ``PairPage`` and ``PairOut``
in ``chatpgt.pairs.schemas``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chatpgt.datagen.prompts import generation_messages
from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.errors import NotFound
from chatpgt.pairs import repository
from chatpgt.pairs.repository import AnyRow, PairFilters

_KEYS = repository.PAIR_KEYS
_ID = _KEYS.index("id")
_JSON_POSITIONS = tuple(i for i, key in enumerate(_KEYS) if key in repository.JSON_TEXT_KEYS)


def _item(row: AnyRow | Sequence[Any]) -> dict[str, Any]:
    values = list(row)
    for i in _JSON_POSITIONS:
        values[i] = orjson.Fragment(values[i])
    item = dict(zip(_KEYS, values, strict=True))
    item["prompt_messages"] = generation_messages(item["prompt"], item["system_prompt"])
    return item


async def pairs_page_json(
    db: AsyncSession | AsyncConnection,
    filters: PairFilters,
    *,
    limit: int,
    cursor: str | None = None,
) -> bytes:
    """One ``PairPage`` as JSON: up to ``limit`` matching pairs after ``cursor`` in id order,
    with ``next_cursor`` null on the last page, read on a session or a connection. Raises
    InvalidInput for a bad cursor."""
    after_id = decode_cursor(cursor)
    rows = await repository.pair_page(db, filters, after_id=after_id, limit=limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1][_ID]) if len(rows) > limit else None
    return orjson.dumps({"items": [_item(r) for r in page], "next_cursor": next_cursor})


async def pair_json(session: AsyncSession, pair_id: int) -> bytes:
    """One ``PairOut`` as JSON; raises NotFound."""
    row = await repository.pair_by_id(session, pair_id)
    if row is None:
        raise NotFound(f"No pair with id {pair_id}.", pair_id=pair_id)
    return orjson.dumps(_item(row))
