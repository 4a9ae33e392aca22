"""Declarative base with a naming convention, so Alembic names constraints predictably."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, MetaData, Numeric, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import JSON, TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT primary keys on Postgres; SQLite only auto-increments a column typed INTEGER.
BigId = BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
# JSONB on Postgres, JSON text elsewhere.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class _SQLiteUTCDateTime(TypeDecorator[datetime]):
    """SQLite stores no offset: write UTC wall-clock time, read it back as aware UTC."""

    impl = sqlite.DATETIME
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# Every ``*_at`` column: TIMESTAMPTZ on Postgres (untouched, asyncpg returns aware datetimes);
# on SQLite, aware UTC datetimes in and out, so code and API answers see the same values.
UTCDateTime = DateTime(timezone=True).with_variant(_SQLiteUTCDateTime(), "sqlite")


class _SQLiteMoney(TypeDecorator[Decimal]):
    """SQLite keeps NUMERIC as a float: round to the column's 6 decimals on the way in, as
    Postgres does, so sums over rows equal Postgres' sums once read back at that scale."""

    impl = Numeric(14, 6)
    cache_ok = True
    _quantum = Decimal("0.000001")

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return Decimal(str(value)).quantize(self._quantum)


# Money: NUMERIC(14, 6) on both databases.
Money = Numeric(14, 6).with_variant(_SQLiteMoney(), "sqlite")


def utcnow() -> datetime:
    """The current time as an aware UTC datetime: what every ``*_at`` column is written with."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=func.now(), default=utcnow
    )
