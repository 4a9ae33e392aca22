"""Rows of on-policy rounds: one per rounds run (a leased unit of work), one per round."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, JSONType, Money, Timestamped, UTCDateTime
from chatpgt.orchestration.models import LeasedRun


class RoundsRun(LeasedRun, Base):
    """K rounds of {datagen with the current model -> judge -> DPO from it}.

    ``status`` follows ``orchestration.status.ROUNDS_RUN`` (changes through
    ``leases.transition_stmt``). Each step of the state machine takes the row's lease for the
    step only, so a redelivered or duplicated step finds it held and does nothing.
    """

    __tablename__ = "rounds_runs"
    __table_args__ = (Index("ix_rounds_runs_status_id", "status", "id"),)

    name: Mapped[str] = mapped_column(String(255))
    # the validated request, defaults filled in, topic ids resolved
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # the SFT model the rounds start from: {"id", "name", "kind"}
    start_model: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # completed | budget_exhausted | no_improvement | cancelled | failed
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # the token of the one live chain of step messages (see service.step)
    step_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))


class Round(Timestamped, Base):
    """One round: its datagen job (generators include ``generator_model``), its DPO run from
    ``generator_model``, the model that run registered and, with the request's ``evaluation``,
    the eval run of that model against ``generator_model``. ``status``: generating, training,
    evaluating, succeeded, failed, cancelled."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("rounds_run_id", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rounds_run_id: Mapped[int] = mapped_column(ForeignKey("rounds_runs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="generating")
    # the model generating this round and DPO's starting point: {"id", "name"}
    generator_model: Mapped[dict[str, Any]] = mapped_column(JSONType)
    datagen_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("datagen_jobs.id", ondelete="SET NULL"), nullable=True
    )
    dpo_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL"), nullable=True
    )
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), nullable=True
    )
    # pairs this round's job produced, and those its DPO run trained on (with accumulate)
    pairs: Mapped[int] = mapped_column(Integer, default=0)
    pairs_trained: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    eval_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("eval_runs.id", ondelete="SET NULL"), nullable=True
    )
    # evaluation.metric of this round's model and of generator_model, read from the eval run's
    # results; improved: it beat the best model so far (rounds.stopping), None before
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    start_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    improved: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
