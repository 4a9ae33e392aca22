"""Rows written straight into the database, for tests that read them back through the API.

Each helper adds one row with sensible defaults and flushes, so the id is known; the test
commits (the API process reads through its own connections).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen import repository as datagen_repo
from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.pairs.models import Pair
from chatpgt.topics.models import Topic
from chatpgt.topics.normalize import normalize_title


async def topic(
    session: AsyncSession,
    title: str,
    *,
    source: str = "manual",
    reference_text: str | None = None,
) -> Topic:
    row = Topic(
        title=title,
        normalized_title=normalize_title(title),
        source=source,
        reference_text=reference_text,
    )
    session.add(row)
    await session.flush()
    return row


# The statuses a new job passes through to reach each status (chatpgt.orchestration).
_JOB_PATHS: dict[str, tuple[str, ...]] = {
    "queued": (),
    "running": ("running",),
    "succeeded": ("running", "succeeded"),
    "failed": ("running", "failed"),
    "cancelled": ("cancelled",),
}
# Columns the last transition writes (a terminal one stamps finished_at unless given).
_AT_THE_END = ("finished_at", "stop_reason", "error", "outcome", "failure_summary")


async def job(session: AsyncSession, *, status: str = "succeeded", **overrides: Any) -> DatagenJob:
    """A job created queued and moved to ``status`` through the one transition function."""
    at_end = {k: overrides.pop(k) for k in _AT_THE_END if k in overrides}
    values: dict[str, Any] = {
        "request": {"test": True},
        "request_hash": "0" * 64,
        "errors": [],
        **overrides,
        "status": "queued",
    }
    row = DatagenJob(**values)
    session.add(row)
    await session.flush()
    steps = _JOB_PATHS[status]
    for i, target in enumerate(steps):
        fields = at_end if i == len(steps) - 1 else {}
        assert await datagen_repo.transition(session, row.id, target, **fields), target
    await session.refresh(row)
    return row


async def generation(
    session: AsyncSession,
    job: DatagenJob,
    topic: Topic,
    model: str,
    text: str | None,
    *,
    sample_index: int = 0,
    status: str = "succeeded",
    cost_usd: str = "0",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    provider: str = "fake",
) -> Generation:
    row = Generation(
        job_id=job.id,
        topic_id=topic.id,
        generator_key=f"{provider}/{model}",
        provider=provider,
        model=model,
        params={},
        sample_index=sample_index,
        prompt=f"Write an essay about {topic.title}.",
        text=text,
        status=status,
        attempts=1,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=Decimal(cost_usd),
    )
    session.add(row)
    await session.flush()
    return row


async def judgment(
    session: AsyncSession,
    a: Generation,
    b: Generation,
    winner: str | None,
    *,
    confidence: int | None = 7,
    status: str = "succeeded",
    cost_usd: str = "0",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    judge_model: str = "judge",
) -> Judgment:
    """A verdict on (A=a, B=b); ``winner`` is "A", "B" or None (failed/pending)."""
    winner_id = {"A": a.id, "B": b.id}.get(winner) if winner else None
    row = Judgment(
        job_id=a.job_id,
        topic_id=a.topic_id,
        generation_a_id=a.id,
        generation_b_id=b.id,
        judge_provider="fake",
        judge_model=judge_model,
        winner=winner,
        winner_generation_id=winner_id,
        reasoning=f"{winner} is better" if winner else None,
        confidence=confidence if winner else None,
        status=status,
        attempts=1,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=Decimal(cost_usd),
    )
    session.add(row)
    await session.flush()
    return row


async def judged_pair(
    session: AsyncSession,
    chosen: Generation,
    rejected: Generation,
    confidence: float,
    *,
    topic_title: str,
    judgments: tuple[Judgment, Judgment] | None = None,
    reasoning: str = "Chosen is clearer.",
) -> Pair:
    ids = [j.id for j in judgments] if judgments else []
    verdicts = [
        {
            "judgment_id": j.id,
            "order": "AB" if i == 0 else "BA",
            "winner_generation_id": j.winner_generation_id,
            "confidence": j.confidence,
            "reasoning": j.reasoning,
        }
        for i, j in enumerate(judgments or ())
    ]
    row = Pair(
        job_id=chosen.job_id,
        topic_id=chosen.topic_id,
        source="judged",
        topic=topic_title,
        prompt=chosen.prompt,
        chosen=chosen.text or "",
        rejected=rejected.text or "",
        chosen_model=chosen.model,
        rejected_model=rejected.model,
        chosen_generation_id=chosen.id,
        rejected_generation_id=rejected.id,
        judgment_reasoning=reasoning,
        confidence=confidence,
        judge_model="judge",
        judgment_ids=ids,
        verdicts=verdicts,
    )
    session.add(row)
    await session.flush()
    return row


async def corpus_pair(
    session: AsyncSession, topic: Topic, rejected: Generation, confidence: float = 10.0
) -> Pair:
    row = Pair(
        job_id=rejected.job_id,
        topic_id=topic.id,
        source="corpus",
        topic=topic.title,
        prompt=rejected.prompt,
        chosen=topic.reference_text or "",
        rejected=rejected.text or "",
        chosen_model="corpus",
        rejected_model=rejected.model,
        chosen_generation_id=None,
        rejected_generation_id=rejected.id,
        judgment_reasoning="The real essay.",
        confidence=confidence,
        judge_model=None,
        judgment_ids=[],
        verdicts=[],
    )
    session.add(row)
    await session.flush()
    return row
