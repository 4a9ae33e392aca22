"""The API's connection pool under steady load: a fixed set of connections, none opened or
closed per request, and pages that still page correctly.

Counted by Postgres itself: ``pg_stat_database.sessions`` is every session ever opened on the
test database (a backend reports its opening the first time it goes idle, and at exit).
"""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chatpgt.settings import Settings
from tests import factories

CLIENTS = 50


async def _sessions_opened(conn: AsyncConnection) -> int:
    # Each call is its own transaction (autocommit), so the statistics snapshot is fresh.
    value = await conn.scalar(
        text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    )
    return int(value or 0)


async def _load(api_url: str, seconds: float) -> int:
    """``CLIENTS`` clients each asking for pages back to back for ``seconds``; pages served."""
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=api_url, timeout=60.0, limits=limits) as http:

        async def client(i: int) -> int:
            served = 0
            while time.monotonic() < deadline:
                params = {"limit": 3, "min_confidence": 6} if i % 2 else {"limit": 5}
                r = await http.get("/pairs", params=params)
                assert r.status_code == 200, r.text
                served += 1
            return served

        return sum(await asyncio.gather(*(client(i) for i in range(CLIENTS))))


async def test_pool_opens_no_connection_under_steady_load(
    api_url: str, session: AsyncSession
) -> None:
    job = await factories.job(session)
    topic = await factories.topic(session, "Pool")
    essays = [await factories.generation(session, job, topic, f"m{i}", "t") for i in range(4)]
    for i, (a, b) in enumerate(zip(essays, essays[1:], strict=False)):
        await factories.judged_pair(session, a, b, 5 + i, topic_title="Pool")
    await session.commit()

    engine = session.bind
    async with engine.connect() as conn:  # type: ignore[union-attr]
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        at_start = await _sessions_opened(conn)
        warm = await _load(api_url, 2.0)
        await asyncio.sleep(1.5)  # let every new backend report itself
        after_warm_up = await _sessions_opened(conn)
        served = await _load(api_url, 4.0)
        await asyncio.sleep(1.5)
        after_load = await _sessions_opened(conn)

    pool = Settings().api_db_pool_size
    assert pool < CLIENTS  # the clients outnumber the connections: requests wait, none opens
    assert warm > CLIENTS and served > CLIENTS
    # Never more than the pool, however many clients (overflow connections would be opened
    # and closed again and again)...
    assert after_load - at_start <= pool
    # ...and none at all once it is warm.
    assert after_load == after_warm_up, (at_start, after_warm_up, after_load, served)
