"""Request bodies over CHATPGT_API_MAX_BODY_BYTES are 413 problem+json answers that write
nothing, whether the size is declared (Content-Length) or only found while streaming (chunked)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.main import create_app
from chatpgt.settings import Settings
from chatpgt.topics.models import Topic

LIMIT = 4096


def titles_body(n: int) -> bytes:
    return json.dumps({"titles": [f"Limits essay number {i}" for i in range(n)]}).encode()


async def chunks(body: bytes, size: int = 512) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def topic_count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Topic))).scalar_one())


async def test_oversized_bodies_are_413s_that_write_nothing(
    service_env: dict[str, str], clean_db: None, session: AsyncSession
) -> None:
    app = create_app(Settings(api_max_body_bytes=LIMIT, embedded_worker=False))
    big, small = titles_body(400), titles_body(20)
    assert len(big) > LIMIT > len(small)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            headers = {"content-type": "application/json"}
            declared = await api.post("/topics", content=big, headers=headers)
            streamed = await api.post("/topics", content=chunks(big), headers=headers)
            assert "content-length" not in streamed.request.headers
            for answer in (declared, streamed):
                assert answer.status_code == 413, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert str(LIMIT) in answer.json()["detail"]
            assert await topic_count(session) == 0

            # Within the cap, streamed or not, the same route works.
            ok = await api.post("/topics", content=chunks(small), headers=headers)
            assert ok.status_code == 200, ok.text
            assert await topic_count(session) == 20
        schema = app.openapi()
        assert "413" in schema["paths"]["/topics"]["post"]["responses"]
        assert "413" not in schema["paths"]["/pairs"]["get"]["responses"]
