"""The columns every leased unit of work shares: a declarative mixin.

A leased row (datagen job, training run, evaluation run, rounds run, dedup scan, generation
request of a registered model) is worked under a lease (``chatpgt.orchestration.leases``): its
``status`` follows its kind's :class:`~chatpgt.orchestration.status.Lifecycle` and changes only
through ``leases.transition_stmt``; ``lease_owner``/``lease_expires_at`` say who holds it until
when (renewed by a heartbeat); ``attempts`` counts the leases taken; ``cancel_requested`` is read
by the heartbeat; ``error`` says why it failed. A kind's model adds only what is its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import BigId, Timestamped, UTCDateTime


class LeasedRun(Timestamped):
    """``id``, ``status``, the lease, attempts, cancel flag, error and timestamps of a leased row
    (its table keeps its own indexes in ``__table_args__``)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def leased_out(self) -> dict[str, Any]:
        """The lease-side fields every kind's API answer carries, as its schema names them."""
        return {
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "updated_at": self.updated_at,
        }
