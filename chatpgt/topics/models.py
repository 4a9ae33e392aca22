from __future__ import annotations

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, Timestamped


class Topic(Timestamped, Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(Text)
    normalized_title: Mapped[str] = mapped_column(Text, unique=True)
    # manual | file | hf | corpus
    source: Mapped[str] = mapped_column(String(16), default="manual")
    # The real essay for topics imported from a corpus (used by include_corpus_pairs).
    reference_text: Mapped[str | None] = mapped_column(Text, nullable=True)
