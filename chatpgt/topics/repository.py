"""All SQL over topics. Functions flush nothing themselves: the request or task commits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    BigInteger,
    Table,
    Text,
    all_,
    any_,
    cast,
    column,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from chatpgt.db.helpers import dialect_insert, is_sqlite
from chatpgt.topics.models import Topic

_topics = typed(Table, Topic.__table__)


@dataclass(frozen=True, slots=True)
class NewTopic:
    title: str
    normalized_title: str
    source: str
    reference_text: str | None = None


@dataclass(frozen=True, slots=True)
class TopicRow:
    id: int
    title: str
    normalized_title: str
    source: str
    has_reference_text: bool
    created_at: datetime


_ROW_COLUMNS = (
    Topic.id,
    Topic.title,
    Topic.normalized_title,
    Topic.source,
    Topic.reference_text.is_not(None).label("has_reference_text"),
    Topic.created_at,
)


def _ids_array(ids: Sequence[int]) -> ColumnElement[list[int]]:
    # One array parameter instead of one parameter per id: asyncpg caps a statement at 32767.
    return literal(list(ids), ARRAY(BigInteger))


def _json_values(values: Sequence[Any]) -> Any:
    # SQLite's form of unnest(array): one JSON parameter, whatever the number of values (SQLite
    # caps a statement at 32766 parameters too).
    return select(func.json_each(literal(json.dumps(list(values)))).table_valued("value").c.value)


def _is_any(
    session: AsyncSession, col: InstrumentedAttribute[Any], values: Sequence[Any], of: Any
) -> ColumnElement[bool]:
    """``col`` is one of ``values`` (a Postgres array of type ``of``; a JSON list on SQLite)."""
    if is_sqlite(session):
        return col.in_(_json_values(values))
    return col == any_(literal(list(values), ARRAY(of)))


def _is_none_of(session: AsyncSession, ids: Sequence[int]) -> ColumnElement[bool]:
    """The topic id is not one of ``ids``."""
    if is_sqlite(session):
        return Topic.id.not_in(_json_values(ids))
    return Topic.id != all_(_ids_array(ids))


async def insert_topics(session: AsyncSession, topics: Sequence[NewTopic]) -> dict[str, int]:
    """Insert topics whose normalised title is new; ``{normalized_title: id}`` of those created.

    Existing titles are left untouched (``ON CONFLICT DO NOTHING``), so concurrent callers
    inserting the same title never fail; the loser simply does not see it as created.
    """
    if not topics:
        return {}
    stmt = (
        dialect_insert(session)(_topics)
        .on_conflict_do_nothing(index_elements=[_topics.c.normalized_title])
        .returning(_topics.c.id, _topics.c.normalized_title)
    )
    params = [
        {
            "title": t.title,
            "normalized_title": t.normalized_title,
            "source": t.source,
            "reference_text": t.reference_text,
        }
        for t in topics
    ]
    result = await session.execute(stmt, params)
    return {row.normalized_title: row.id for row in result}


async def add_missing_reference_texts(
    session: AsyncSession, texts: Sequence[tuple[str, str]], *, chunk: int = 1000
) -> int:
    """Give existing topics without an essay the essay ``(normalized_title, text)``; they become
    corpus topics. Topics that already hold an essay keep theirs. Returns how many changed."""
    changed = 0
    sqlite = is_sqlite(session)
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        values: Any
        if sqlite:
            # json_each over [[normalized, text], ...] stands in for unnest of two arrays.
            pairs = func.json_each(literal(json.dumps([list(p) for p in part]))).table_valued(
                "value"
            )
            values = select(
                func.json_extract(pairs.c.value, "$[0]").label("normalized"),
                func.json_extract(pairs.c.value, "$[1]").label("text"),
            ).subquery("given")
        else:
            values = (
                func.unnest(
                    literal([n for n, _ in part], ARRAY(Text)),
                    literal([t for _, t in part], ARRAY(Text)),
                )
                .table_valued(column("normalized", Text), column("text", Text))
                .render_derived(name="given")
            )
        stmt = (
            update(_topics)
            .where(
                _topics.c.normalized_title == values.c.normalized,
                _topics.c.reference_text.is_(None),
            )
            .values(reference_text=values.c.text, source="corpus")
        )
        result = await session.execute(stmt)
        changed += result.rowcount  # type: ignore[attr-defined]
    return changed


async def topics_by_normalized_title(
    session: AsyncSession, normalized_titles: Sequence[str]
) -> dict[str, TopicRow]:
    """The topics with these normalised titles, keyed by normalised title (absent ones left out)."""
    if not normalized_titles:
        return {}
    stmt = select(*_ROW_COLUMNS).where(
        _is_any(session, Topic.normalized_title, normalized_titles, Text)
    )
    rows = (await session.execute(stmt)).all()
    return {row.normalized_title: TopicRow(**row._mapping) for row in rows}


async def list_topics(
    session: AsyncSession,
    *,
    after_id: int | None,
    limit: int,
    source: str | None = None,
    contains: str | None = None,
) -> list[TopicRow]:
    """Up to ``limit`` topics with id > ``after_id`` in id order. ``contains`` is matched as a
    substring of the normalised title, so pass it normalised."""
    stmt = select(*_ROW_COLUMNS).order_by(Topic.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(Topic.id > after_id)
    if source:
        stmt = stmt.where(Topic.source == source)
    if contains:
        stmt = stmt.where(Topic.normalized_title.contains(contains, autoescape=True))
    rows = (await session.execute(stmt)).all()
    return [TopicRow(**row._mapping) for row in rows]


async def existing_topic_ids(session: AsyncSession, ids: Sequence[int]) -> set[int]:
    """The subset of ``ids`` that are topics."""
    if not ids:
        return set()
    stmt = select(Topic.id).where(_is_any(session, Topic.id, ids, BigInteger))
    return set((await session.scalars(stmt)).all())


async def count_topics(
    session: AsyncSession, *, source: str | None = None, exclude: Sequence[int] = ()
) -> int:
    stmt = select(func.count()).select_from(_topics)
    if source:
        stmt = stmt.where(Topic.source == source)
    if exclude:
        stmt = stmt.where(_is_none_of(session, exclude))
    return int((await session.scalar(stmt)) or 0)


async def sample_topic_ids(
    session: AsyncSession,
    n: int,
    *,
    seed: int | None = None,
    source: str | None = None,
    exclude: Sequence[int] = (),
) -> list[int]:
    """Up to ``n`` random topic ids. With a ``seed`` the draw is repeatable: the same seed over
    the same topics gives the same ids in the same order (and adding topics changes it little).
    The seeded order is md5-based, so it is the same on Postgres and SQLite (whose connections
    get an md5() function, see :func:`chatpgt.db.session.configure_sqlite`)."""
    order: ColumnElement[Any]
    if seed is None:
        order = func.random()
    else:
        order = func.md5(literal(f"{seed}:") + cast(Topic.id, Text))
    stmt = select(Topic.id).order_by(order, Topic.id).limit(n)
    if source:
        stmt = stmt.where(Topic.source == source)
    if exclude:
        stmt = stmt.where(_is_none_of(session, exclude))
    return list((await session.scalars(stmt)).all())
