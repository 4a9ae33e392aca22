"""The provider fault drill: a 200-item job against a provider that misbehaves a third of the time.

Real API (uvicorn), Postgres, Redis, a Celery worker process and the fake provider server, which
answers 20% of requests with a 5xx, 10% with a 429 and ``Retry-After``, lets 5% hang past the
client's timeout, writes 5% unparseable verdicts, and is scripted to break the body of at least
one essay and one verdict in each of the ways in ``BODY_FAULTS``. The job must finish, every item
must end terminal with a reason when it failed, the counts must reconcile exactly, and no row may
be written twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import Generation, Judgment
from chatpgt.pairs import repository as pairs_repository
from chatpgt.pairs.models import JobWorkSummary, Pair
from chatpgt.pairs.repository import WORK_FIELDS
from chatpgt.testing.fake_openai import BODY_FAULTS
from tests import procs
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import settled_stats

pytestmark = pytest.mark.e2e

TOPICS = 50  # x 2 generators = 100 essays; best_vs_worst judges each topic's pair in 2 orders
TERMINAL_ITEM = {"succeeded", "failed", "skipped", "cancelled"}
# The body faults that fail an item at once (the others are retried): their reasons must show.
FAIL_FAST_REASONS = {
    "no_choices": "not a chat completion: no 'choices'",
    "no_message": "not a chat completion: choices[0] has no 'message'",
    "content_not_string": "message.content is a JSON object, not a string",
    "huge_body": "response body over 8388608 bytes (max_response_bytes)",
}


def reconcile(stage: dict[str, int], rows: dict[str, int]) -> None:
    """The API's counts of one stage against the rows' statuses counted in the database."""
    assert stage["pending"] == 0, stage
    assert set(rows) <= TERMINAL_ITEM, rows
    assert stage["done"] + stage["failed"] + stage["skipped"] + stage["cancelled"] == stage["total"]
    assert stage["total"] == sum(rows.values())
    assert stage["done"] == rows.get("succeeded", 0)
    assert stage["failed"] == rows.get("failed", 0)
    assert stage["skipped"] == rows.get("skipped", 0)
    assert stage["cancelled"] == rows.get("cancelled", 0)


async def status_counts(session: AsyncSession, model: Any, job_id: int) -> dict[str, int]:
    rows = await session.execute(
        select(model.status, func.count()).where(model.job_id == job_id).group_by(model.status)
    )
    return {status: int(n) for status, n in rows}


async def duplicates(session: AsyncSession, *columns: Any) -> int:
    """How many natural keys are held by more than one row."""
    grouped = select(*columns).group_by(*columns).having(func.count() > 1).subquery()
    return int(await session.scalar(select(func.count()).select_from(grouped)) or 0)


async def test_fault_drill_200_items(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    script = [f"{scope}:{kind}" for kind in BODY_FAULTS for scope in ("writer", "judge")]
    # At 5% of about 70 clean judge answers, no malformed verdict at all happens 3% of the time.
    script.append("judge:malformed")
    profile = {
        "rate_5xx": 0.2,
        "rate_429": 0.1,
        "retry_after_s": 0.05,
        "rate_timeout": 0.05,
        "hang_s": 1.5,  # past fake-drill's 1 s timeout
        "rate_malformed_judge": 0.05,
        "script": script,
    }
    (await fake.post("/_control", json=profile)).raise_for_status()

    titles = [f"Fault drill topic {i}: on resilience" for i in range(TOPICS)]
    started = time.monotonic()
    created = await api.post("/datagen/jobs", json=job_body(titles, provider="fake-drill"))
    assert created.status_code == 201, created.text
    job = await wait_job(api, created.json()["id"], within_s=90)
    elapsed = time.monotonic() - started
    job_id = job["id"]

    # The job finished, and on its own terms: it made pairs despite the faults.
    assert job["status"] == "succeeded", job
    assert job["pairs"] > 0
    gens, judgments = job["generations"], job["judgments"]
    assert gens["total"] == 2 * TOPICS
    # best_vs_worst: one matchup in both orders for every topic whose two essays came back.
    topics_with_both = await session.scalar(
        select(func.count()).select_from(
            select(Generation.topic_id)
            .where(Generation.job_id == job_id, Generation.status == "succeeded")
            .group_by(Generation.topic_id)
            .having(func.count() == 2)
            .subquery()
        )
    )
    assert judgments["total"] == 2 * topics_with_both
    planned = gens["total"] + 2 * TOPICS
    assert planned == 200

    # Counts reconcile exactly, in the API's answer and in the rows.
    reconcile(gens, await status_counts(session, Generation, job_id))
    reconcile(judgments, await status_counts(session, Judgment, job_id))
    assert job["pairs"] == await session.scalar(
        select(func.count()).select_from(Pair).where(Pair.job_id == job_id)
    )

    # The worker stored the finished job's stats summary (a first GET /pairs/stats scans none
    # of its work), and it matches the rows.
    summary = None
    for _ in range(50):
        session.expire_all()
        summary = await session.get(JobWorkSummary, job_id)
        if summary is not None:
            break
        await asyncio.sleep(0.1)
    assert summary is not None and summary.finished_at is not None
    fresh = (await pairs_repository.compute_job_work(session, [job_id]))[job_id]
    assert {name: getattr(summary, name) for name in WORK_FIELDS} == fresh

    # No row written twice: per natural key, and one best_vs_worst pair per topic at most.
    assert (
        await duplicates(
            session,
            Generation.job_id,
            Generation.topic_id,
            Generation.generator_key,
            Generation.sample_index,
        )
        == 0
    )
    assert (
        await duplicates(
            session, Judgment.job_id, Judgment.generation_a_id, Judgment.generation_b_id
        )
        == 0
    )
    assert (
        await duplicates(
            session, Pair.job_id, Pair.chosen_generation_id, Pair.rejected_generation_id
        )
        == 0
    )
    assert await duplicates(session, Pair.job_id, Pair.topic_id) == 0

    # Every failed item says why, never carries a winner, and the job lists its first errors.
    failed_gens = (
        (
            await session.execute(
                select(Generation).where(Generation.job_id == job_id, Generation.status == "failed")
            )
        )
        .scalars()
        .all()
    )
    failed_judgments = (
        (
            await session.execute(
                select(Judgment).where(Judgment.job_id == job_id, Judgment.status == "failed")
            )
        )
        .scalars()
        .all()
    )
    assert all((g.error or "").strip() and g.text is None for g in failed_gens)
    assert all((j.error or "").strip() and j.winner is None for j in failed_judgments)
    assert job["errors"] and all(e["error"] for e in job["errors"])

    # The scripted body faults happened, to essays and to verdicts alike, and the ones that fail
    # at once left their reason on a failed essay and on a failed verdict.
    seen = (await settled_stats(fake))["by_outcome"]
    for kind in (*BODY_FAULTS, "5xx", "429", "timeout", "malformed"):
        assert seen.get(kind, 0) >= 1, (kind, seen)
    assert all(seen.get(kind, 0) >= 2 for kind in BODY_FAULTS), seen
    gen_errors = " | ".join(g.error or "" for g in failed_gens)
    judgment_errors = " | ".join(j.error or "" for j in failed_judgments)
    for kind, reason in FAIL_FAST_REASONS.items():
        assert reason in gen_errors, (kind, gen_errors)
        assert reason in judgment_errors, (kind, judgment_errors)
    print(
        f"fault drill: {elapsed:.1f} s; essays {gens}; verdicts {judgments}; pairs {job['pairs']};"
        f" provider outcomes {seen}"
    )
