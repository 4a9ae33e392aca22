"""Small dialect-aware statement builders shared by repositories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def dialect_insert(session: AsyncSession):  # type: ignore[no-untyped-def]
    """The insert() of the session's dialect (Postgres or SQLite), which has on_conflict_*."""
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    return sqlite.insert if dialect == "sqlite" else postgresql.insert


async def insert_ignore(
    session: AsyncSession, model: type[DeclarativeBase], rows: Sequence[dict[str, Any]]
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: rows that already exist (by any unique key) are kept."""
    if not rows:
        return
    await session.execute(dialect_insert(session)(model).on_conflict_do_nothing(), list(rows))


async def insert_one_ignore(
    session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]
) -> Any | None:
    """Insert one row unless a unique key already holds it; the new primary key, or None."""
    table = model.__table__  # type: ignore[attr-defined]
    pk = list(table.primary_key.columns)[0]
    stmt = dialect_insert(session)(model).values(**values).on_conflict_do_nothing().returning(pk)
    return (await session.execute(stmt)).scalar_one_or_none()
