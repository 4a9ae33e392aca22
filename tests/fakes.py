"""Driving the fake provider server (chatpgt.testing.fake_openai) from a test: its control
client is the ``fake`` fixture of conftest.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


async def control(client: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    """Change the fault profile (``POST /_control``); answers the whole new profile."""
    response = await client.post("/_control", json=changes)
    response.raise_for_status()
    return dict(response.json())


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    """The server's counters (``GET /_stats``)."""
    return dict((await client.get("/_stats")).json())


async def settled_stats(client: httpx.AsyncClient, within_s: float = 15.0) -> dict[str, Any]:
    """The counters once no request is in flight: a simulated timeout is counted when its hang
    ends, which can be after the client gave up and the job finished."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        current = await stats(client)
        if current["in_flight"] == 0 or asyncio.get_running_loop().time() > deadline:
            return current
        await asyncio.sleep(0.1)
