"""Rows of serving: one per generation request (essays asked of a registered model)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, JSONType, Timestamped, UTCDateTime
from chatpgt.orchestration.models import LeasedRun


class ModelGeneration(LeasedRun, Base):
    """``POST /models/{id}/generations``: the messages and sampling settings asked for, and the
    essays once a gpu worker wrote them.

    Leased like a training run (``orchestration.status.TRAINING_RUN``: queued, running,
    succeeded, failed, cancelled; status changes through ``leases.transition_stmt``), so a
    redelivered task finds it busy or done, and one whose worker died is taken over.
    """

    __tablename__ = "model_generations"
    __table_args__ = (Index("ix_model_generations_model_id_id", "model_id", "id"),)

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    # {"messages": [...], "max_new_tokens", "temperature", "top_p", "n", "title"?}
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # [{"text", "finish_reason", "prompt_tokens", "completion_tokens"}], one per sample
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # {"load_s", "generate_s", "tokens_per_s", "device"}
    timings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class ArenaBattle(Timestamped, Base):
    """One blind comparison in the playground: two models' essays on one title, shown in a
    random order recorded here (``model_ids`` and ``generation_ids`` are in shown order: A
    first), and the reviewer's vote (``choice``: A, B or tie) with the winning model."""

    __tablename__ = "arena_battles"
    __table_args__ = (Index("ix_arena_battles_voted_at", "voted_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(Text)
    # who asked for it (the signed-in key's name, or "local")
    reviewer: Mapped[str] = mapped_column(String(255))
    model_ids: Mapped[list[int]] = mapped_column(JSONType)
    generation_ids: Mapped[list[int]] = mapped_column(JSONType)
    choice: Mapped[str | None] = mapped_column(String(8), nullable=True)
    winner_model_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    voted_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    voted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
