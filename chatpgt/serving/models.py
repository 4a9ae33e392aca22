"""Rows of serving: one per generation request (essays asked of a registered model)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, JSONType
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
