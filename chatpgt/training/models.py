"""Rows of training: one per run (SFT or DPO) and the registry of models those runs produced."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, JSONType, Timestamped
from chatpgt.orchestration.models import LeasedRun


class TrainingRun(LeasedRun, Base):
    """One SFT or DPO run: the request as submitted, its state, progress, metrics and artifacts.

    ``status`` changes only through :func:`chatpgt.training.repository.transition_stmt` (the
    orchestration layer's, with the training run lifecycle). A worker holds the run through a
    lease (``lease_owner``, ``lease_expires_at``) renewed by a heartbeat, so a redelivered task
    finds the run busy, or takes it over once the lease has expired.
    """

    __tablename__ = "training_runs"
    __table_args__ = (Index("ix_training_runs_status_id", "status", "id"),)

    # sft | dpo
    kind: Mapped[str] = mapped_column(String(8))
    # the validated request, defaults filled in
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # the model training starts from: {"ref", "path", "model_id", "kind"}
    start_model: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # name the produced model is registered under
    output_name: Mapped[str] = mapped_column(String(255))
    # step, total_steps, epoch, eta_s, resumed_from_step
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # {"latest": {...}, "final": {...}}
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # examples used, how long essays were split, pairs exported/truncated
    data_report: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # run_dir, model_dir, tensorboard_dir, last_checkpoint
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # SFT: the essay-level train/eval split ({"corpus", "seed", "eval_fraction", "train": [...],
    # "eval": [...]}, each essay as {"index", "title"}); evaluation holds the eval essays out
    essay_split: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class RegisteredModel(Timestamped, Base):
    """A model in the registry: a base (hub id or path), or the output of an SFT or DPO run.

    ``parent_id`` gives the lineage: base -> SFT -> DPO.
    """

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # base | sft | dpo
    kind: Mapped[str] = mapped_column(String(8))
    # a local directory, or a Hugging Face id for base models
    path: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), nullable=True
    )
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL"), nullable=True, unique=True
    )
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
