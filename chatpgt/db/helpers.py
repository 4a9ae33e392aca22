"""Small dialect-aware statement builders shared by repositories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def is_sqlite(session: AsyncSession) -> bool:
    """Whether the session talks to SQLite (else Postgres): for the few statements that differ."""
    return session.bind is not None and session.bind.dialect.name == "sqlite"


def insert_for(dialect: str):  # type: ignore[no-untyped-def]
    """The insert() of a dialect by name ("sqlite", else Postgres), which has on_conflict_*."""
    return sqlite.insert if dialect == "sqlite" else postgresql.insert


def dialect_insert(session: AsyncSession):  # type: ignore[no-untyped-def]
    """The insert() of the session's dialect (Postgres or SQLite), which has on_conflict_*."""
    return insert_for("sqlite" if is_sqlite(session) else "postgresql")


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
    pk = sa_inspect(model).primary_key[0]
    stmt = dialect_insert(session)(model).values(**values).on_conflict_do_nothing().returning(pk)
    return (await session.execute(stmt)).scalar_one_or_none()
