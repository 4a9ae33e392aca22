"""Helpers for datagen tests: a job request body, and waiting for a job to finish."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


def job_body(
    titles: list[str],
    *,
    samples: int = 1,
    pairing: str = "best_vs_worst",
    provider: str = "fake",
    budget_usd: float | None = None,
    max_tokens: int = 300,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "topics": {"titles": titles},
        "generators": [
            {
                "provider": provider,
                "model": "writer-a",
                "samples_per_topic": samples,
                "temperature": 0.7,
                "max_tokens": max_tokens,
            },
            {
                "provider": provider,
                "model": "writer-b",
                "samples_per_topic": 1,
                "temperature": 0.9,
                "max_tokens": max_tokens,
            },
        ],
        "judge": {"provider": provider, "model": "judge"},
        "pairing": pairing,
    }
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    return body


async def wait_job(api: httpx.AsyncClient, job_id: int, within_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        r = await api.get(f"/datagen/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']}: {job}")
        await asyncio.sleep(0.2)
