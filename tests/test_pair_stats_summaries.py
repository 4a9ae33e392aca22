"""GET /pairs/stats over finished jobs: each finished job's judge and cost figures are computed
once, stored in job_work_summaries and reused; unfinished jobs are always computed from rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import DatagenJob
from chatpgt.pairs.models import JobWorkSummary
from tests import factories


async def _job_with_work(session: AsyncSession, **job: Any) -> DatagenJob:
    """A job whose work is one agreeing matchup, one flipped matchup and one judged in one
    order only: 3 essays at $0.10, 5 judgments at $0.01."""
    row = await factories.job(session, **job)
    topic = await factories.topic(session, f"Summaries {row.id}")
    a, b, c = [
        await factories.generation(
            session, row, topic, m, "text", cost_usd="0.10", prompt_tokens=10
        )
        for m in ("m1", "m2", "m3")
    ]
    for x, y, winner in ((a, b, "A"), (b, a, "B"), (a, c, "A"), (c, a, "A"), (b, c, "A")):
        await factories.judgment(session, x, y, winner, cost_usd="0.01", completion_tokens=3)
    return row


async def _stats(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    resp = await api.get("/pairs/stats", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_finished_jobs_are_summarised_once_and_unfinished_ones_read_live(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    finished_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    done = await _job_with_work(session, finished_at=finished_at)
    running = await _job_with_work(session, status="running")
    await session.commit()

    stats = await _stats(api)
    # Two jobs, each: 2 matchups with both orders (1 flip), 3 essays, 5 judgments.
    assert stats["judge"] == {"matchups": 4, "flips": 2, "flip_rate": 0.5}
    assert stats["cost"]["generations"] == {
        "count": 6,
        "cost_usd": 0.6,
        "prompt_tokens": 60,
        "completion_tokens": 0,
        "cache_hits": 0,
        "saved_usd": 0.0,
    }
    assert stats["cost"]["judgments"]["count"] == 10
    assert stats["cost"]["judgments"]["completion_tokens"] == 30
    assert round(stats["cost"]["total_cost_usd"], 6) == 0.7

    # Only the finished job was stored, with its own figures.
    rows = (await session.execute(select(JobWorkSummary))).scalars().all()
    assert [(r.job_id, r.matchups, r.flips, r.generations, r.judgments) for r in rows] == [
        (done.id, 2, 1, 3, 5)
    ]
    assert rows[0].finished_at == finished_at

    # The stored summary is what later reads use (not a new scan of the job's rows)...
    await session.execute(
        text("UPDATE job_work_summaries SET flips = 2 WHERE job_id = :j"), {"j": done.id}
    )
    await session.commit()
    assert (await _stats(api))["judge"]["flips"] == 3
    assert (await _stats(api, job_id=done.id))["judge"]["flips"] == 2
    # ...while the unfinished job is read from its rows every time.
    assert (await _stats(api, job_id=running.id))["judge"]["flips"] == 1

    # A summary older than the job's finished_at is recomputed from the rows.
    await session.execute(
        text("UPDATE job_work_summaries SET finished_at = :t WHERE job_id = :j"),
        {"t": finished_at - timedelta(hours=1), "j": done.id},
    )
    await session.commit()
    assert (await _stats(api))["judge"] == {"matchups": 4, "flips": 2, "flip_rate": 0.5}
    session.expire_all()
    row = (await session.execute(select(JobWorkSummary))).scalar_one()
    assert (row.flips, row.finished_at) == (1, finished_at)
