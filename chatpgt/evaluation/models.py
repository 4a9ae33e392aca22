"""The row of an evaluation run: a third kind of gpu-queue job next to SFT and DPO runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, JSONType
from chatpgt.orchestration.models import LeasedRun


class EvalRun(LeasedRun, Base):
    """One evaluation of a list of models on a lineage's held-out essays.

    Same life as a training run (``orchestration.status.TRAINING_RUN``: queued,
    running, succeeded, failed, cancelled; changes through ``transition_stmt``), same lease and
    heartbeat.
    """

    __tablename__ = "eval_runs"
    __table_args__ = (Index("ix_eval_runs_status_id", "status", "id"),)

    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # the validated request, defaults filled in
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # each model resolved at submit: [{"ref", "name", "kind", "path", "model_id"}]
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    # {"sft_run_id", "corpus", "essays": [{"index", "title"}], "excluded": [...], "statement"}
    heldout: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # stage, model, models, done, total, eta_s
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # the report's table: per model perplexity/style/win rate/descriptive summaries
    results: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # run_dir, report_json, report_html
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
