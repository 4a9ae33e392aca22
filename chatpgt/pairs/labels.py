"""The ``pair_labels`` table: one reviewer's verdict on one pair (at most one per reviewer).

Labels are facts about pairs (exports and DPO selection read them), so the model lives with
the pairs; ``chatpgt.review`` (calibration, the review pages' service) sits above both."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, Timestamped, UTCDateTime, utcnow


class PairLabel(Timestamped, Base):
    """A reviewer's label. ``choice`` is what the reviewer clicked, by position on their screen
    ("A" = the left essay); ``shown_order`` says which essay was on the left ("AB": the pair's
    chosen essay was shown as A, "BA": its rejected one); ``preferred`` is the label in the
    pair's own terms: "chosen" (agrees with the judge), "rejected", "tie" or "bad" (the pair is
    unusable). A second label by the same reviewer replaces the first (``updated_at``)."""

    __tablename__ = "pair_labels"
    __table_args__ = (
        UniqueConstraint("pair_id", "reviewer"),
        CheckConstraint("choice IN ('A', 'B', 'tie', 'bad')", name="choice"),
        CheckConstraint("shown_order IN ('AB', 'BA')", name="shown_order"),
        CheckConstraint("preferred IN ('chosen', 'rejected', 'tie', 'bad')", name="preferred"),
        Index("ix_pair_labels_reviewer", "reviewer"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(255))
    choice: Mapped[str] = mapped_column(String(8))
    shown_order: Mapped[str] = mapped_column(String(2))
    preferred: Mapped[str] = mapped_column(String(8))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), default=utcnow
    )
