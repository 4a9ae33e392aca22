"""The row of a near-duplicate scan: a leased unit of work on the datagen queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Index
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, JSONType
from chatpgt.orchestration.models import LeasedRun


class DedupScan(LeasedRun, Base):
    """One ``POST /pairs/dedup``: MinHash-LSH over the succeeded essays of ``job_ids`` (every
    job when empty), run by a datagen worker (``chatpgt.datasets.scans``).

    ``status`` follows ``orchestration.status.DEDUP_SCAN`` (queued, running, succeeded, failed,
    cancelled; changes through ``leases.transition_stmt``); the lease and heartbeat are the
    other leased kinds'. The flags themselves live in ``near_duplicates``, written with the
    final transition in one transaction.
    """

    __tablename__ = "dedup_scans"
    __table_args__ = (Index("ix_dedup_scans_status_id", "status", "id"),)

    # the jobs as requested (empty: every job, resolved when the scan starts)
    job_ids: Mapped[list[int]] = mapped_column(JSONType)
    threshold: Mapped[float] = mapped_column(Float)
    # {"essays": scanned so far, "total": succeeded essays counted at start, "corpus_essays"}
    progress: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # once succeeded: {"job_ids" (resolved), "threshold", "essays", "corpus_essays", "flagged"}
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
