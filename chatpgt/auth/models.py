"""The ``api_keys`` table: one row per client key. The secret itself is never stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from chatpgt.db.base import Base, BigId, Timestamped, UTCDateTime


class ApiKey(Timestamped, Base):
    """A client's key. ``prefix`` is the public part of the key (``cpgt_<prefix>_<secret>``) used to
    find the row; ``key_hash`` is the SHA-256 (hex) of the whole key. ``last_used_at`` is updated at
    most about once a minute per key, never per request; a key with ``revoked_at`` set is refused.
    """

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('read', 'write')", name="scope"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    # read: GET and HEAD routes; write: every route
    scope: Mapped[str] = mapped_column(String(8))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
