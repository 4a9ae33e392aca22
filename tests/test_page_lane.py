"""GET /pairs through the page lane (api.page_lane) and through the FastAPI route: the same
status, headers and bytes for every query, whichever of the two answers it.

Two apps over one database, one with the lane and one without (``api_page_lane=False``), are
asked the same questions: plain queries the lane answers itself (checked by its own reader),
and queries it must leave to the route (unknown or repeated parameters, forms it does not
read, values out of range, bad cursors), whose problem+json the route writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from api import page_lane
from api.main import create_app
from chatpgt.pairs.repository import PairFilters
from chatpgt.settings import Settings
from tests.test_pairs_api import build_world

# Queries the lane reads itself: (query string, what the route would read from it).
PLAIN: list[tuple[str, tuple[PairFilters, int, str | None]]] = [
    ("", (PairFilters(), 50, None)),
    ("limit=2", (PairFilters(), 2, None)),
    ("limit=500", (PairFilters(), 500, None)),
    ("min_confidence=6&limit=3", (PairFilters(min_confidence=6.0), 3, None)),
    ("min_confidence=6.5", (PairFilters(min_confidence=6.5), 50, None)),
    ("min_confidence=0", (PairFilters(min_confidence=0.0), 50, None)),
    ("min_confidence=10.000", (PairFilters(min_confidence=10.0), 50, None)),
    ("job_id=2&job_id=1&job_id=2", (PairFilters(job_ids=(2, 1)), 50, None)),
    ("model=writer-a&limit=4", (PairFilters(model="writer-a"), 4, None)),
    ("model=%C3%A9b%C3%A8ne+x", (PairFilters(model="ébène x"), 50, None)),
    ("source=judged", (PairFilters(source="judged"), 50, None)),
    ("source=corpus", (PairFilters(source="corpus"), 50, None)),
    ("dedup_threshold=1", (PairFilters(dedup_threshold=1.0), 50, None)),
    (
        "dedup_threshold=0.25&source=judged",
        (PairFilters(dedup_threshold=0.25, source="judged"), 50, None),
    ),
    ("cursor=aWQ6Mw&limit=2", (PairFilters(), 2, "aWQ6Mw")),  # id:3
]
# Queries the route answers (the lane hands them on).
ROUTED = [
    "limit=0",
    "limit=501",
    "limit=05",
    "limit=%2B5",
    "limit=abc",
    "limit=",
    "limit=3&limit=4",
    "min_confidence=11",
    "min_confidence=10.5",
    "min_confidence=-1",
    "min_confidence=nan",
    "min_confidence=inf",
    "min_confidence=1e0",
    "min_confidence=+6",
    "min_confidence=%206",
    "min_confidence=6.",
    "min_confidence=",
    "min_confidence=6&min_confidence=1",
    "dedup_threshold=0",
    "dedup_threshold=1.5",
    "source=other",
    "source=",
    "job_id=0",
    "job_id=x",
    "job_id=",
    "job_id=99999999999999999999",
    "cursor=bad!",
    "cursor=aWQ6",
    "cursor=",
    "cursor=aWQ6Mw&cursor=aWQ6Mw",
    "jobid=1",
    "limit=2&extra",
    "model=a%00b",
    "model=",
    "model=a&model=b",
]


def test_the_lane_reads_plain_queries_as_the_route_does_and_no_others() -> None:
    for query, expected in PLAIN:
        assert page_lane.read_query(parse_qsl(query, keep_blank_values=True), 500) == expected
    for query in ROUTED:
        with pytest.raises(page_lane._NotPlain):
            page_lane.read_query(parse_qsl(query, keep_blank_values=True), 500)


@asynccontextmanager
async def _client(*, lane: bool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(embedded_worker=False, api_page_lane=lane))
    assert any(m.cls is page_lane.PageLane for m in app.user_middleware) == lane
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, sorted(response.headers.multi_items()), response.content


async def test_lane_and_route_answer_every_query_with_the_same_bytes(
    session: AsyncSession,
) -> None:
    world = await build_world(session)
    await session.commit()
    assert len(world.pairs) > 8
    queries = [query for query, _ in PLAIN] + ROUTED
    async with _client(lane=True) as lane, _client(lane=False) as route:
        for query in queries:
            a, b = await lane.get(f"/pairs?{query}"), await route.get(f"/pairs?{query}")
            assert _answer(a) == _answer(b), query
            assert a.status_code in (200, 400, 422), (query, a.text)
        # Every page of a walk, cursors included, from both.
        for filters in ("limit=3", "min_confidence=6&limit=2", "model=writer-b&limit=2"):
            cursor: str | None = ""
            pages = 0
            while cursor is not None:
                query = f"{filters}&cursor={cursor}" if cursor else filters
                a, b = await lane.get(f"/pairs?{query}"), await route.get(f"/pairs?{query}")
                assert a.status_code == 200 and _answer(a) == _answer(b), query
                cursor = a.json()["next_cursor"]
                pages += 1
            assert pages > 1, filters
