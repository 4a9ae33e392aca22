"""The floor `bench/api_load.py` measures the API against: a bare ASGI app, asyncpg and orjson.

No framework, no ORM, no validation, no auth: the least a server can do to answer the same three
calls over the same tables, with the same SQL shape:

- ``GET /pairs?min_confidence=&limit=&cursor=``: the keyset page (pairs joined to the rejected
  essay's generation for its system prompt), the same fields, one orjson body;
- ``GET /pairs/stats?min_confidence=``: the pairs part of the API's statistics as one indexed
  aggregate (the grouping-sets scan of ``ix_pairs_stats``), returned as counts;
- ``GET /pairs/export``: every matching pair as TRL JSONL from a server-side cursor in
  200-row batches, each encoded with orjson and sent before the next is fetched.

Run by the bench: ``uvicorn floor_app:app --app-dir bench`` with ``FLOOR_DATABASE_URL`` (a
``postgresql://`` URL) and ``FLOOR_POOL_SIZE``.
"""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson

PAGE_SQL = """
SELECT p.id, p.job_id, p.topic_id, p.topic, p.prompt, g.system_prompt, p.chosen, p.rejected,
       p.chosen_model, p.rejected_model, p.judgment_reasoning, p.confidence, p.judge_model,
       p.source, p.chosen_generation_id, p.rejected_generation_id,
       p.judgment_ids::text AS judgment_ids, p.verdicts::text AS verdicts, p.created_at
FROM pairs p JOIN generations g ON g.id = p.rejected_generation_id
WHERE p.confidence >= $1 AND p.id > $2
ORDER BY p.id LIMIT $3
"""
STATS_SQL = """
SELECT least(greatest(floor(confidence)::int, 1), 10) AS bucket, chosen_model, rejected_model,
       source, chosen_chars, rejected_chars,
       grouping(least(greatest(floor(confidence)::int, 1), 10)) AS g0, count(*) AS n
FROM pairs WHERE confidence >= $1
GROUP BY GROUPING SETS ((least(greatest(floor(confidence)::int, 1), 10)),
                        (chosen_model, rejected_model), (source), (chosen_chars),
                        (rejected_chars))
"""
EXPORT_SQL = """
SELECT p.id, p.job_id, p.topic, p.prompt, g.system_prompt, p.chosen, p.rejected,
       p.chosen_model, p.rejected_model, p.confidence
FROM pairs p JOIN generations g ON g.id = p.rejected_generation_id
WHERE p.confidence >= $1 ORDER BY p.id
"""
JSON_TEXT = ("judgment_ids", "verdicts")


def _cursor_id(cursor: str | None) -> int:
    """The API's cursor (``id:<n>``, URL-safe base64 without padding)."""
    if not cursor:
        return 0
    padded = cursor + "=" * (-len(cursor) % 4)
    return int(base64.urlsafe_b64decode(padded).decode().removeprefix("id:"))


def _next_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def _item(record: asyncpg.Record) -> dict[str, Any]:
    item = dict(record)
    for key in JSON_TEXT:
        item[key] = orjson.Fragment(item[key])
    messages = [{"role": "user", "content": item["prompt"]}]
    if item["system_prompt"]:
        messages.insert(0, {"role": "system", "content": item["system_prompt"]})
    item["prompt_messages"] = messages
    return item


def _line(record: asyncpg.Record) -> bytes:
    prompt = [{"role": "user", "content": record["prompt"]}]
    if record["system_prompt"]:
        prompt.insert(0, {"role": "system", "content": record["system_prompt"]})
    return orjson.dumps(
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": record["chosen"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]}],
            "id": record["id"],
            "job_id": record["job_id"],
            "topic": record["topic"],
            "confidence": record["confidence"],
            "chosen_model": record["chosen_model"],
            "rejected_model": record["rejected_model"],
            "human_label": None,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


class Floor:
    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.pool = await asyncpg.create_pool(
                        os.environ["FLOOR_DATABASE_URL"],
                        min_size=1,
                        max_size=int(os.environ.get("FLOOR_POOL_SIZE", "20")),
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.pool is not None:
                        await self.pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.pool is not None
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        min_confidence = float(query.get("min_confidence", 0))
        path = scope["path"]
        if path == "/pairs":
            limit = int(query.get("limit", 50))
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    PAGE_SQL, min_confidence, _cursor_id(query.get("cursor")), limit + 1
                )
            page = rows[:limit]
            body = orjson.dumps(
                {
                    "items": [_item(r) for r in page],
                    "next_cursor": _next_cursor(page[-1]["id"]) if len(rows) > limit else None,
                }
            )
            await _answer(send, body, b"application/json")
        elif path == "/pairs/stats":
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(STATS_SQL, min_confidence)
            total = sum(r["n"] for r in rows if r["g0"] == 0)
            await _answer(send, orjson.dumps({"total": total, "groups": len(rows)}), b"json")
        elif path == "/pairs/export":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/jsonl")],
                }
            )
            async with self.pool.acquire() as conn, conn.transaction():
                cursor = await conn.cursor(EXPORT_SQL, min_confidence)
                while True:
                    batch = await cursor.fetch(200)
                    if not batch:
                        break
                    chunk = b"".join(_line(r) for r in batch)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _answer(send, b"not found", b"text/plain", status=404)


async def _answer(send: Any, body: bytes, media: bytes, status: int = 200) -> None:
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = Floor()
