"""Rows of human review of models: the playground's blind battles and their votes (the labels
of pairs live with the pairs, :mod:`chatpgt.pairs.labels`). Here, below evaluation and serving,
so that both read the votes: serving records them, an evaluation reports them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, JSONType, Timestamped, UTCDateTime


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
