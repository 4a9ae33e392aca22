from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Computed,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, JSONType, Money, Timestamped, UTCDateTime


class Pair(Timestamped, Base):
    """One preference pair. Texts are copied in so that serving and exporting read one table."""

    __tablename__ = "pairs"
    __table_args__ = (
        # A judged pair is unique per job and ordered (chosen, rejected) generations; a corpus
        # pair (the real essay as chosen) is unique per job and rejected generation.
        Index(
            "uq_pairs_judged",
            "job_id",
            "chosen_generation_id",
            "rejected_generation_id",
            unique=True,
            postgresql_where=text("source = 'judged'"),
            sqlite_where=text("source = 'judged'"),
        ),
        Index(
            "uq_pairs_corpus",
            "job_id",
            "rejected_generation_id",
            unique=True,
            postgresql_where=text("source = 'corpus'"),
            sqlite_where=text("source = 'corpus'"),
        ),
        Index("ix_pairs_confidence_id", "confidence", "id"),
        Index("ix_pairs_job_id_id", "job_id", "id"),
        # Everything GET /pairs/stats reads and filters on, so that its scan is index-only
        # (~80 bytes a pair instead of the ~700-byte heap rows).
        Index(
            "ix_pairs_stats",
            "confidence",
            postgresql_include=[
                "job_id",
                "source",
                "chosen_model",
                "rejected_model",
                "chosen_chars",
                "rejected_chars",
            ],
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("datagen_jobs.id", ondelete="CASCADE"))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    # judged | corpus
    source: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    chosen: Mapped[str] = mapped_column(Text)
    rejected: Mapped[str] = mapped_column(Text)
    chosen_model: Mapped[str] = mapped_column(String(255))
    rejected_model: Mapped[str] = mapped_column(String(255))
    chosen_generation_id: Mapped[int | None] = mapped_column(
        ForeignKey("generations.id"), nullable=True
    )
    rejected_generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id"))
    judgment_reasoning: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float)
    # Stored so that length statistics never read (and decompress) the texts themselves.
    chosen_chars: Mapped[int] = mapped_column(Integer, Computed("length(chosen)", persisted=True))
    rejected_chars: Mapped[int] = mapped_column(
        Integer, Computed("length(rejected)", persisted=True)
    )
    judge_model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # ids of the judgments behind the pair: [A/B verdict, B/A verdict]
    judgment_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    verdicts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class JobWorkSummary(Base):
    """The judge and cost figures of one finished datagen job, as pair statistics report them.

    A finished job's generations and judgments never change, so these are computed once (by the
    runner as the job finishes, or by the first statistics read that misses them) instead of on
    every read: a statistics read over finished jobs reads no generation and no judgment.
    ``finished_at`` is the job's, and a summary whose ``finished_at`` differs from the job's is
    recomputed.
    """

    __tablename__ = "job_work_summaries"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("datagen_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # matchups with both orders judged successfully, and those whose verdicts disagree
    matchups: Mapped[int] = mapped_column(BigInteger)
    flips: Mapped[int] = mapped_column(BigInteger)
    generations: Mapped[int] = mapped_column(BigInteger)
    generations_cost_usd: Mapped[Decimal] = mapped_column(Money)
    generations_prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    generations_completion_tokens: Mapped[int] = mapped_column(BigInteger)
    judgments: Mapped[int] = mapped_column(BigInteger)
    judgments_cost_usd: Mapped[Decimal] = mapped_column(Money)
    judgments_prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    judgments_completion_tokens: Mapped[int] = mapped_column(BigInteger)
    # succeeded verdicts for the essay shown first / second (the judge's position bias)
    position_a_wins: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    position_b_wins: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # answered from the response cache (chatpgt.datagen.cache), and what was saved: by the
    # cache, and by provider batches against online prices
    generations_cache_hits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    generations_saved_usd: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")
    judgments_cache_hits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    judgments_saved_usd: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")


class NearDuplicate(Base):
    """A candidate essay found to be a near-duplicate (MinHash-LSH, estimated Jaccard
    similarity of word shingles) of an earlier essay, or of the corpus essay of its topic.

    One row per flagged generation, holding its highest similarity; the essay it resembles is
    ``similar_generation_id`` (kind ``essay``) or the reference text of ``similar_topic_id``
    (kind ``corpus``). Exports and statistics leave out pairs with a flagged essay when asked
    (``PairFilters.dedup_threshold``). See ``chatpgt.datasets.dedup``.
    """

    __tablename__ = "near_duplicates"

    generation_id: Mapped[int] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[int] = mapped_column(ForeignKey("datagen_jobs.id", ondelete="CASCADE"))
    # essay | corpus
    kind: Mapped[str] = mapped_column(String(16))
    similar_generation_id: Mapped[int | None] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), nullable=True
    )
    similar_topic_id: Mapped[int | None] = mapped_column(ForeignKey("topics.id"), nullable=True)
    similarity: Mapped[float] = mapped_column(Float)
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_near_duplicates_job_id", "job_id"),)
