from __future__ import annotations

from typing import Any

from sqlalchemy import Computed, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, JSONType, Timestamped


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
