"""Rows of a datagen job: the job, one row per (job, topic), generations and judgments."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, JSONType, Money, Timestamped, UTCDateTime, utcnow
from chatpgt.orchestration.models import LeasedRun


class DatagenJob(LeasedRun, Base):
    __tablename__ = "datagen_jobs"

    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    budget_usd: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    # null, "budget_exhausted", "cancelled" or "max_failure_rate": why a job stopped before
    # doing all its work
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # null until terminal: produced, produced_with_failures or nothing_produced
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # the most common failure reasons: [{stage, provider, model, reason, count}]
    failure_summary: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class JobTopic(Base):
    """The prompt every candidate for this topic answers, chosen once per (job, topic)."""

    __tablename__ = "job_topics"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("datagen_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), primary_key=True)
    template_index: Mapped[int] = mapped_column(SmallInteger)
    prompt: Mapped[str] = mapped_column(Text)
    # generating -> judging -> done
    stage: Mapped[str] = mapped_column(String(16), default="generating")


class _WorkItem:
    """Columns shared by every unit of work that calls a provider."""

    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Answered from the response cache (no provider request, cost 0); saved_usd is what the
    # cached answer cost when it was bought.
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    saved_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")


class Generation(Timestamped, _WorkItem, Base):
    __tablename__ = "generations"
    __table_args__ = (
        UniqueConstraint("job_id", "topic_id", "generator_key", "sample_index"),
        Index("ix_generations_job_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("datagen_jobs.id", ondelete="CASCADE"))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    generator_key: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    sample_index: Mapped[int] = mapped_column(SmallInteger)
    system_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt: Mapped[str] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Judgment(Timestamped, _WorkItem, Base):
    """One verdict on an ordered pair: essay A is generation_a, essay B is generation_b."""

    __tablename__ = "judgments"
    __table_args__ = (
        UniqueConstraint("job_id", "generation_a_id", "generation_b_id"),
        Index("ix_judgments_job_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("datagen_jobs.id", ondelete="CASCADE"))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    generation_a_id: Mapped[int] = mapped_column(ForeignKey("generations.id"))
    generation_b_id: Mapped[int] = mapped_column(ForeignKey("generations.id"))
    judge_provider: Mapped[str] = mapped_column(String(64))
    judge_model: Mapped[str] = mapped_column(String(255))
    # "A" or "B" (positions as shown to the judge)
    winner: Mapped[str | None] = mapped_column(String(1), nullable=True)
    winner_generation_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    reasoning: Mapped[str | None] = mapped_column(Text, nullable=True)
    confidence: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    raw_answer: Mapped[str | None] = mapped_column(Text, nullable=True)


class CachedResponse(Base):
    """A provider's answer, kept under the hash of everything that decides it (endpoint,
    model, messages, sampling parameters, seed, sample index): a request with the same key is
    answered from here at $0, in any job (:mod:`chatpgt.datagen.cache`)."""

    __tablename__ = "response_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    # what the answer cost when it was bought: what each later hit saves
    cost_usd: Mapped[Decimal] = mapped_column(Money)
    logprobs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProviderBatch(Timestamped, Base):
    """One remote batch of a job (OpenAI's Batch API): written before its file is uploaded,
    its file id stored before the batch is created, its batch id as soon as it exists, so a
    worker that dies anywhere in between resumes the same batch (:mod:`chatpgt.datagen.batches`).

    ``status``: ``submitting`` (ours, until the batch id is stored), then the provider's
    (``validating``, ``in_progress``, ``finalizing``, ``cancelling``), then ``done`` once its
    output and error files are stored in ``batch_results`` (``remote_status`` keeps the
    provider's last word: completed, failed, expired, cancelled), or ``abandoned`` when it never
    reached the provider.
    """

    __tablename__ = "provider_batches"
    __table_args__ = (Index("ix_provider_batches_job_status", "job_id", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("datagen_jobs.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    remote_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    remote_file_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    remote_batch_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # the request keys (custom_id) in it
    keys: Mapped[list[str]] = mapped_column(JSONType)
    # {total, completed, failed} as the provider last said
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # the budget held for its requests until their answers are in
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BatchResult(Base):
    """One answer (or error) of a remote batch, stored as soon as its files are downloaded."""

    __tablename__ = "batch_results"

    batch_id: Mapped[int] = mapped_column(
        ForeignKey("provider_batches.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    # what the same answer costs online (the saving is the difference)
    online_cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # an error worth asking again (in the next batch)
    retryable: Mapped[bool] = mapped_column(Boolean, default=True)
