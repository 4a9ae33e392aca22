"""All SQL over pairs: filtered keyset pages, streaming for export, statistics.

Reads select plain columns rather than ORM objects: pages of ~9 KB essays are served at the
speed of the query only if no per-row object is built.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Dialect,
    Float,
    Integer,
    Row,
    Select,
    String,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import QueryableAttribute

from chatpgt.datagen import repository as datagen_repo
from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.db.helpers import dialect_insert
from chatpgt.orchestration.status import TERMINAL as JOB_TERMINAL
from chatpgt.pairs.consensus import DECIDED, consensus_of, pair_consensus
from chatpgt.pairs.models import JobWorkSummary, NearDuplicate, Pair


@dataclass(frozen=True, slots=True)
class PairFilters:
    """The selection shared by GET /pairs, /pairs/stats, /pairs/export and DPO training."""

    min_confidence: float | None = None
    job_ids: tuple[int, ...] = ()
    model: str | None = None  # matches the chosen or the rejected model
    source: str | None = None  # "judged" or "corpus"
    # "prefer": the reviewers' verdict (chatpgt.pairs.consensus) overrides the judge: a pair
    # they decided is kept whatever its confidence (and reversed on export when they preferred
    # the rejected essay), one they called a tie or bad is left out. "ignore": labels are not read.
    labels: str = "ignore"
    # leave out pairs with an essay flagged as a near-duplicate at or above this similarity
    dedup_threshold: float | None = None


def _given(value: object) -> bool:
    """Whether a filter value is set: not None, not an empty string (a bound parameter standing
    for a value, see :func:`_page_sql`, is set)."""
    return value is not None and value != "" if isinstance(value, str | None) else True


def _conditions(filters: PairFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    human = consensus_of(Pair.id) if filters.labels == "prefer" else None
    if human is not None:
        conditions.append(or_(human.is_(None), human.in_(DECIDED)))
    if filters.min_confidence is not None:
        by_judge = Pair.confidence >= filters.min_confidence
        conditions.append(by_judge if human is None else or_(by_judge, human.in_(DECIDED)))
    if filters.job_ids:
        conditions.append(Pair.job_id.in_(filters.job_ids))
    if _given(filters.model):
        conditions.append(
            or_(Pair.chosen_model == filters.model, Pair.rejected_model == filters.model)
        )
    if _given(filters.source):
        conditions.append(Pair.source == filters.source)
    if filters.dedup_threshold is not None:
        flagged = select(NearDuplicate.generation_id).where(
            NearDuplicate.similarity >= filters.dedup_threshold
        )
        conditions.append(Pair.rejected_generation_id.not_in(flagged))
        conditions.append(
            or_(Pair.chosen_generation_id.is_(None), Pair.chosen_generation_id.not_in(flagged))
        )
    return conditions


# The generation whose messages a pair's prompt shows: the rejected essay's (never null; both
# essays of a pair were asked for with the same messages).
_PROMPT_GENERATION = Generation.id == Pair.rejected_generation_id


def select_pairs(filters: PairFilters) -> Select[Pair]:
    """Pairs (ORM objects) matching ``filters`` in keyset order (ascending id)."""
    return select(Pair).where(*_conditions(filters)).order_by(Pair.id)


_Column = ColumnElement[Any] | QueryableAttribute[Any]
# A result row of any width.
AnyRow = Row[*tuple[Any, ...]]

# The API shape of a pair, in field order. The JSONB columns come back as their JSON text so the
# service can embed them without parsing and re-serialising.
PAIR_COLUMNS: tuple[_Column, ...] = (
    Pair.id,
    Pair.job_id,
    Pair.topic_id,
    Pair.topic,
    Pair.prompt,
    Generation.system_prompt,
    Pair.chosen,
    Pair.rejected,
    Pair.chosen_model,
    Pair.rejected_model,
    Pair.judgment_reasoning,
    Pair.confidence,
    Pair.judge_model,
    Pair.source,
    Pair.chosen_generation_id,
    Pair.rejected_generation_id,
    cast(Pair.judgment_ids, Text).label("judgment_ids"),
    cast(Pair.verdicts, Text).label("verdicts"),
    Pair.created_at,
)
PAIR_KEYS: tuple[str, ...] = tuple(c.key or "" for c in PAIR_COLUMNS)
JSON_TEXT_KEYS = frozenset({"judgment_ids", "verdicts"})

# What an export line needs (TRL record, seed CSV, Parquet, length balancing), nothing more.
EXPORT_COLUMNS: tuple[_Column, ...] = (
    Pair.id,
    Pair.job_id,
    Pair.topic,
    Pair.prompt,
    Generation.system_prompt,
    Pair.chosen,
    Pair.rejected,
    Pair.chosen_model,
    Pair.rejected_model,
    Pair.judgment_reasoning,
    Pair.confidence,
    Pair.chosen_chars,
    Pair.rejected_chars,
    pair_consensus(),
)


def _preferring_labels(columns: tuple[_Column, ...]) -> tuple[_Column, ...]:
    """``columns`` with chosen and rejected swapped where the reviewers preferred the rejected
    essay (whose ``human_label`` then reads "chosen")."""
    human = consensus_of(Pair.id)
    reversed_ = human == "rejected"
    swap = {"chosen": Pair.rejected, "rejected": Pair.chosen,
            "chosen_model": Pair.rejected_model, "rejected_model": Pair.chosen_model,
            "chosen_chars": Pair.rejected_chars, "rejected_chars": Pair.chosen_chars}  # fmt: skip
    out: list[_Column] = []
    for column in columns:
        if column.key in swap:
            out.append(case((reversed_, swap[column.key]), else_=column).label(column.key))
        elif column.key == "human_label":
            out.append(case((reversed_, "chosen"), else_=human).label("human_label"))
        else:
            out.append(column)
    return tuple(out)


def page_statement(filters: PairFilters, *, after_id: int | None, limit: int) -> Select[Any]:
    """The keyset page query: up to ``limit`` matching pairs with id > ``after_id``, ascending
    id, as ``PAIR_COLUMNS`` (the planner walks the primary key from ``after_id``)."""
    stmt = (
        select(*PAIR_COLUMNS)
        .select_from(Pair)
        .join(Generation, _PROMPT_GENERATION)
        .where(*_conditions(filters))
        .order_by(Pair.id)
        .limit(limit)
    )
    if after_id is not None:
        stmt = stmt.where(Pair.id > after_id)
    return stmt


# The page statement's SQL per shape of the filters (which are set, how many jobs) and
# dialect, with the parameter names in the order the driver takes them.
_PAGE_SQL: dict[tuple[Any, ...], tuple[str, tuple[str, ...], dict[str, Any]]] = {}
_PAGE_SQL_MAX = 256


def _page_sql(
    dialect: Dialect, filters: PairFilters, *, after_id: bool
) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """``(sql, parameter names in order, constant parameters)`` of :func:`page_statement` for
    filters of this shape, compiled once: building and compiling the statement (SQLAlchemy's
    cache key included) cost more CPU than Postgres spends on the page."""
    key = (
        dialect,
        filters.min_confidence is not None,
        len(filters.job_ids),
        _given(filters.model),
        _given(filters.source),
        filters.labels,
        filters.dedup_threshold is not None,
        after_id,
    )
    found = _PAGE_SQL.get(key)
    if found is None:
        # The filters with a bound parameter in place of each value that is set.
        placeholders: dict[str, Any] = {
            "min_confidence": bindparam("min_confidence", type_=Float) if key[1] else None,
            "job_ids": tuple(bindparam(f"job_{i}", type_=BigInteger) for i in range(key[2])),
            "model": bindparam("model", type_=String) if key[3] else None,
            "source": bindparam("source", type_=String) if key[4] else None,
            "labels": filters.labels,
            "dedup_threshold": bindparam("dedup_threshold", type_=Float) if key[6] else None,
        }
        shape = PairFilters(**placeholders)
        stmt = page_statement(
            shape,
            after_id=bindparam("after_id", type_=BigInteger) if after_id else None,  # type: ignore[arg-type]
            limit=bindparam("limit", type_=Integer),  # type: ignore[arg-type]
        )
        compiled = stmt.compile(dialect=dialect)
        found = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
        if len(_PAGE_SQL) >= _PAGE_SQL_MAX:  # job filters of many lengths: start over
            _PAGE_SQL.clear()
        _PAGE_SQL[key] = found
    return found


async def pair_page(
    db: AsyncSession | AsyncConnection,
    filters: PairFilters,
    *,
    after_id: int | None,
    limit: int,
) -> Sequence[Sequence[Any]]:
    """Up to ``limit`` pairs with id > ``after_id``, ascending id, as ``PAIR_COLUMNS`` rows, on
    a session or a connection.

    On Postgres the statement's SQL is compiled once per shape of the filters (:func:`_page_sql`)
    and sent by the driver itself, one round trip: the rows are asyncpg's records (Postgres needs
    no result processing for these columns), with no SQLAlchemy cursor or result around them.
    No transaction is begun: on a connection outside one, the page is its own statement."""
    if isinstance(db, AsyncConnection):
        connection = db
    else:
        connection = await db.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.paramstyle != "numeric_dollar":
        stmt = page_statement(filters, after_id=after_id, limit=limit)
        return (await connection.execute(stmt)).all()
    sql, names, constants = _page_sql(dialect, filters, after_id=after_id is not None)
    values: dict[str, Any] = {
        **constants,
        "min_confidence": filters.min_confidence,
        "model": filters.model,
        "source": filters.source,
        "dedup_threshold": filters.dedup_threshold,
        "after_id": after_id,
        "limit": limit,
    }
    values.update((f"job_{i}", job_id) for i, job_id in enumerate(filters.job_ids))
    args = tuple(values[name] for name in names)
    driver: Any = (await connection.get_raw_connection()).driver_connection
    try:
        return await driver.fetch(sql, *args)  # type: ignore[no-any-return]
    except Exception as error:
        # Raised as SQLAlchemy raises a failed statement, so that callers tell a database that
        # is gone from a refused statement the same way (chatpgt.db.session.is_unavailable).
        raise DBAPIError(sql, args, error, connection_invalidated=driver.is_closed()) from error


async def pair_by_id(session: AsyncSession, pair_id: int) -> AnyRow | None:
    """One pair as a ``PAIR_COLUMNS`` row, or None."""
    stmt = (
        select(*PAIR_COLUMNS)
        .select_from(Pair)
        .join(Generation, _PROMPT_GENERATION)
        .where(Pair.id == pair_id)
    )
    return (await session.execute(stmt)).first()


async def stream_export_rows(
    session: AsyncSession, filters: PairFilters, *, batch_size: int = 200
) -> AsyncIterator[Sequence[AnyRow]]:
    """Every matching pair as ``EXPORT_COLUMNS`` rows, ascending id, in batches of at most
    ``batch_size``, read through a server-side cursor: memory stays flat in the row count.
    The session holds an open transaction until the iteration ends.

    On Postgres the cursor is asyncpg's own, one round trip a batch (SQLAlchemy's fetches a
    batch as 50 rows, then the rest: two), and the rows are named tuples of the driver's
    values (Postgres needs no result processing for these columns)."""
    columns = _preferring_labels(EXPORT_COLUMNS) if filters.labels == "prefer" else EXPORT_COLUMNS
    stmt = (
        select(*columns)
        .select_from(Pair)
        .join(Generation, _PROMPT_GENERATION)
        .where(*_conditions(filters))
        .order_by(Pair.id)
    )
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql" and dialect.paramstyle == "numeric_dollar":
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        args = [compiled.params[name] for name in compiled.positiontup or ()]
        make_row: Any = namedtuple(  # type: ignore[misc]  # noqa: PYI024
            "ExportRow", list(stmt.selected_columns.keys())
        )
        connection = await session.connection()
        driver: Any = (await connection.get_raw_connection()).driver_connection
        if not driver.is_in_transaction():
            # A cursor lives in a transaction: the session's own, begun by a first statement,
            # so that it ends (rolled back) with the session whatever happens to this iterator.
            await connection.exec_driver_sql("SELECT 1")
        cursor = await driver.cursor(compiled.string, *args)
        while batch := await cursor.fetch(batch_size):
            rows: Any = [make_row._make(record) for record in batch]
            yield rows
        return
    result = await session.stream(stmt.execution_options(yield_per=batch_size))
    try:
        async for rows in result.partitions(batch_size):
            yield rows
    finally:
        await result.close()


async def length_sides(session: AsyncSession, filters: PairFilters) -> tuple[int, int]:
    """(pairs whose chosen essay is longer, pairs whose chosen essay is shorter) among the
    matching pairs, from the stored lengths."""
    stmt = (
        select(
            func.count().filter(Pair.chosen_chars > Pair.rejected_chars),
            func.count().filter(Pair.chosen_chars < Pair.rejected_chars),
        )
        .select_from(Pair)
        .where(*_conditions(filters))
    )
    longer, shorter = (await session.execute(stmt)).one()
    return int(longer), int(shorter)


@dataclass(frozen=True, slots=True)
class JobLengthCounts:
    job_id: int
    total: int
    chosen_longer: int
    chosen_shorter: int


async def job_length_counts(session: AsyncSession, filters: PairFilters) -> list[JobLengthCounts]:
    """Per job (id order): the matching pairs, and those whose chosen essay is longer/shorter."""
    stmt = (
        select(
            Pair.job_id,
            func.count(),
            func.count().filter(Pair.chosen_chars > Pair.rejected_chars),
            func.count().filter(Pair.chosen_chars < Pair.rejected_chars),
        )
        .where(*_conditions(filters))
        .group_by(Pair.job_id)
        .order_by(Pair.job_id)
    )
    return [JobLengthCounts(*map(int, row)) for row in await session.execute(stmt)]


async def job_matchup_counts(
    session: AsyncSession, filters: PairFilters
) -> list[tuple[int, str, str, int]]:
    """(job id, chosen model, rejected model, pairs) of the matching pairs."""
    stmt = (
        select(Pair.job_id, Pair.chosen_model, Pair.rejected_model, func.count())
        .where(*_conditions(filters))
        .group_by(Pair.job_id, Pair.chosen_model, Pair.rejected_model)
    )
    return [(int(j), c, r, int(n)) for j, c, r, n in await session.execute(stmt)]


async def position_wins(
    session: AsyncSession, job_ids: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """``{job id: (verdicts for the essay shown first, verdicts for the one shown second)}``
    over the successful judgments of the given jobs (every job when empty)."""
    stmt = (
        select(
            Judgment.job_id,
            func.count().filter(Judgment.winner == "A"),
            func.count().filter(Judgment.winner == "B"),
        )
        .where(Judgment.status == "succeeded")
        .group_by(Judgment.job_id)
    )
    if job_ids:
        stmt = stmt.where(Judgment.job_id.in_(job_ids))
    return {int(j): (int(a), int(b)) for j, a, b in await session.execute(stmt)}


async def near_duplicate_counts(
    session: AsyncSession, job_ids: Sequence[int], threshold: float | None
) -> dict[str, int]:
    """Flagged essays of the given jobs (every job when empty) by kind (``essay``, ``corpus``),
    at or above ``threshold`` when given."""
    stmt = select(NearDuplicate.kind, func.count()).group_by(NearDuplicate.kind)
    if job_ids:
        stmt = stmt.where(NearDuplicate.job_id.in_(job_ids))
    if threshold is not None:
        stmt = stmt.where(NearDuplicate.similarity >= threshold)
    return {kind: int(n) for kind, n in await session.execute(stmt)}


async def count_pairs(session: AsyncSession, filters: PairFilters) -> int:
    stmt = select(func.count()).select_from(Pair).where(*_conditions(filters))
    return int((await session.execute(stmt)).scalar_one())


async def selection_job_ids(session: AsyncSession, filters: PairFilters) -> list[int]:
    """The jobs that have matching pairs, ascending."""
    stmt = select(Pair.job_id).where(*_conditions(filters)).distinct().order_by(Pair.job_id)
    return [int(j) for j in (await session.execute(stmt)).scalars()]


def _bucket(sqlite: bool) -> ColumnElement[int]:
    # Inline constants, not bind parameters: GROUP BY must repeat the select expression
    # exactly, and the same value bound twice would be two different parameters.
    if sqlite:
        # CAST truncates on SQLite; truncation and floor differ only below 0, clamped to 1 anyway.
        return func.min(
            func.max(cast(Pair.confidence, Integer), literal_column("1")), literal_column("10")
        )
    floor = cast(func.floor(Pair.confidence), Integer)
    return func.least(func.greatest(floor, literal_column("1")), literal_column("10"))


async def _sqlite_median(
    session: AsyncSession, length: _Column, filters: PairFilters, count: int
) -> float | None:
    # percentile_cont(0.5) of SQLite: the middle value, or the mean of the two middle values.
    if count == 0:
        return None
    middle = (
        select(length.label("n"))
        .where(*_conditions(filters))
        .order_by(length)
        .limit(2 - count % 2)
        .offset((count - 1) // 2)
        .subquery()
    )
    return float((await session.execute(select(func.avg(middle.c.n)))).scalar_one())


async def sqlite_pair_totals(session: AsyncSession, filters: PairFilters) -> SimpleNamespace:
    """SQLite's path (Postgres: :func:`pair_aggregates`): counts and character-length
    aggregates of the matching pairs in one scan, plus one ordered read per median (SQLite has
    no percentile_cont; embedded data sets are small).

    Columns: total, judged, corpus, then for ``chosen_`` and ``rejected_``: ``mean``,
    ``median``, ``min``, ``max`` (None when no pair matches).
    """
    chosen_len = Pair.chosen_chars
    rejected_len = Pair.rejected_chars
    columns: list[ColumnElement[Any]] = [
        func.count().label("total"),
        func.count().filter(Pair.source == "judged").label("judged"),
        func.count().filter(Pair.source == "corpus").label("corpus"),
        func.count().filter(Pair.source == "imported").label("imported"),
    ]
    for name, length in (("chosen", chosen_len), ("rejected", rejected_len)):
        columns += [
            cast(func.avg(length), Float).label(f"{name}_mean"),
            func.min(length).label(f"{name}_min"),
            func.max(length).label(f"{name}_max"),
        ]
    stmt = select(*columns).select_from(Pair).where(*_conditions(filters))
    row = (await session.execute(stmt)).one()
    values = row._asdict()
    for name, length in (("chosen", chosen_len), ("rejected", rejected_len)):
        values[f"{name}_median"] = await _sqlite_median(session, length, filters, row.total)
    return SimpleNamespace(**values)


async def sqlite_group_counts(
    session: AsyncSession, filters: PairFilters
) -> tuple[dict[int, int], list[tuple[str, str, int]]]:
    """SQLite's path (Postgres: :func:`pair_aggregates`): pairs per confidence bucket (floor,
    clamped to 1-10) and per (chosen_model, rejected_model), as two grouped statements (SQLite
    has no GROUPING SETS)."""
    bucket = _bucket(sqlite=True).label("bucket")
    by_bucket = (
        select(bucket, func.count().label("n")).where(*_conditions(filters)).group_by(bucket)
    )
    buckets = {int(row.bucket): int(row.n) for row in await session.execute(by_bucket)}
    by_matchup = (
        select(Pair.chosen_model, Pair.rejected_model, func.count().label("n"))
        .where(*_conditions(filters))
        .group_by(Pair.chosen_model, Pair.rejected_model)
    )
    matchups = [
        (row.chosen_model, row.rejected_model, int(row.n))
        for row in await session.execute(by_matchup)
    ]
    return buckets, matchups


@dataclass(frozen=True, slots=True)
class PairAggregates:
    """What pair statistics need from the pairs table: counts per confidence bucket, per
    (chosen_model, rejected_model) and per source, how many essays have each length, and per
    job its matchups and how many chosen essays are longer or shorter than the rejected."""

    buckets: dict[int, int]
    matchups: list[tuple[str, str, int]]
    sources: dict[str, int]
    chosen_lengths: dict[int, int]
    rejected_lengths: dict[int, int]
    job_matchups: list[tuple[int, str, str, int]]
    job_lengths: list[JobLengthCounts]


# work_mem of the statistics' grouping-sets scan (:func:`pair_aggregates`).
STATS_WORK_MEM = "64MB"


async def pair_aggregates(session: AsyncSession, filters: PairFilters) -> PairAggregates:
    """All of ``PairAggregates`` from one scan (Postgres: grouping sets over the stored
    lengths, index-only through ``ix_pairs_stats``). The length histograms give exact means,
    medians, minima and maxima without sorting a million values; the per-job figures are
    those of :func:`job_matchup_counts` and :func:`job_length_counts`."""
    bucket = _bucket(sqlite=False).label("bucket")
    longer = func.sign(Pair.chosen_chars - Pair.rejected_chars).label("longer")
    dims: tuple[_Column, ...] = (
        bucket,
        Pair.chosen_model,
        Pair.source,
        Pair.chosen_chars,
        Pair.rejected_chars,
        Pair.job_id,
    )
    stmt = (
        select(
            bucket,
            Pair.chosen_model,
            Pair.rejected_model,
            Pair.source,
            Pair.chosen_chars,
            Pair.rejected_chars,
            Pair.job_id,
            longer,
            *(func.grouping(d).label(f"g{i}") for i, d in enumerate(dims)),
            func.count().label("n"),
        )
        .where(*_conditions(filters))
        .group_by(
            func.grouping_sets(
                tuple_(bucket),
                tuple_(Pair.chosen_model, Pair.rejected_model),
                tuple_(Pair.source),
                tuple_(Pair.chosen_chars),
                tuple_(Pair.rejected_chars),
                tuple_(Pair.job_id, Pair.chosen_model, Pair.rejected_model),
                tuple_(Pair.job_id, longer),
            )
        )
    )
    agg = PairAggregates({}, [], {}, {}, {}, [], [])
    sides: dict[int, dict[int, int]] = {}
    # With the default 4 MB the planner, overestimating the groups, sorts some of the sets on
    # disk past a few 100k pairs (3.7 s at 1M pairs); with room it hashes all seven in one pass
    # (1.7 s, ~3.5 MB used). For this transaction only.
    await session.execute(text(f"SET LOCAL work_mem = '{STATS_WORK_MEM}'"))
    for row in await session.execute(stmt):
        n = int(row.n)
        # grouping(x) is 0 in the grouping sets that group by x
        if row.g5 == 0:  # per job
            if row.g1 == 0:
                agg.job_matchups.append((int(row.job_id), row.chosen_model, row.rejected_model, n))
            else:
                sides.setdefault(int(row.job_id), {})[int(row.longer)] = n
        elif row.g0 == 0:
            agg.buckets[int(row.bucket)] = n
        elif row.g1 == 0:
            agg.matchups.append((row.chosen_model, row.rejected_model, n))
        elif row.g2 == 0:
            agg.sources[row.source] = n
        elif row.g3 == 0:
            agg.chosen_lengths[int(row.chosen_chars)] = n
        else:
            agg.rejected_lengths[int(row.rejected_chars)] = n
    for job_id in sorted(sides):
        counts = sides[job_id]
        agg.job_lengths.append(
            JobLengthCounts(job_id, sum(counts.values()), counts.get(1, 0), counts.get(-1, 0))
        )
    return agg


# --- the judge and cost figures of jobs, summarised once per finished job ---------------------

WORK_FIELDS = (
    "matchups",
    "flips",
    "generations",
    "generations_cost_usd",
    "generations_prompt_tokens",
    "generations_completion_tokens",
    "judgments",
    "judgments_cost_usd",
    "judgments_prompt_tokens",
    "judgments_completion_tokens",
    "position_a_wins",
    "position_b_wins",
    "generations_cache_hits",
    "generations_saved_usd",
    "judgments_cache_hits",
    "judgments_saved_usd",
)
# WORK_FIELDS that are money (Decimal)
MONEY_WORK_FIELDS = (
    "generations_cost_usd",
    "judgments_cost_usd",
    "generations_saved_usd",
    "judgments_saved_usd",
)


async def job_finish_times(
    session: AsyncSession, job_ids: Sequence[int]
) -> dict[int, datetime | None]:
    """``{job id: finished_at}`` of the given jobs (every job when empty); None while a job is
    not in a terminal state."""
    stmt = select(DatagenJob.id, DatagenJob.status, DatagenJob.finished_at)
    if job_ids:
        stmt = stmt.where(DatagenJob.id.in_(job_ids))
    return {
        job_id: finished_at if status in JOB_TERMINAL else None
        for job_id, status, finished_at in await session.execute(stmt)
    }


async def saved_job_summaries(
    session: AsyncSession, job_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """Stored summaries of the given jobs (every stored one when empty), by job id."""
    stmt = select(JobWorkSummary.job_id, JobWorkSummary.finished_at, *WORK_SUMMARY_COLUMNS)
    if job_ids:
        stmt = stmt.where(JobWorkSummary.job_id.in_(job_ids))
    return {row.job_id: row._asdict() for row in await session.execute(stmt)}


async def compute_job_work(
    session: AsyncSession, job_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """The ``WORK_FIELDS`` of each given job, from its generations and judgments (one grouped
    read of each table through its ``(job_id, status)`` index, plus the order-flip and
    position counts)."""
    if not job_ids:
        return {}
    zero = dict.fromkeys(WORK_FIELDS, 0)
    work: dict[int, dict[str, Any]] = {j: dict(zero) for j in job_ids}
    for name, model in (("generations", Generation), ("judgments", Judgment)):
        stmt = (
            select(
                model.job_id,
                func.count(),
                func.coalesce(func.sum(model.cost_usd), 0),
                func.coalesce(func.sum(model.prompt_tokens), 0),
                func.coalesce(func.sum(model.completion_tokens), 0),
                func.count().filter(model.cache_hit),
                func.coalesce(func.sum(model.saved_usd), 0),
            )
            .where(model.job_id.in_(job_ids))
            .group_by(model.job_id)
        )
        for job_id, count, cost, prompt, completion, hits, saved in await session.execute(stmt):
            work[job_id].update(
                {
                    name: int(count),
                    f"{name}_cost_usd": Decimal(cost),
                    f"{name}_prompt_tokens": int(prompt),
                    f"{name}_completion_tokens": int(completion),
                    f"{name}_cache_hits": int(hits),
                    f"{name}_saved_usd": Decimal(saved),
                }
            )
    for job_id, (matchups, flips) in (await datagen_repo.flip_counts(session, job_ids)).items():
        work[job_id].update(matchups=matchups, flips=flips)
    for job_id, (a_wins, b_wins) in (await position_wins(session, job_ids)).items():
        work[job_id].update(position_a_wins=a_wins, position_b_wins=b_wins)
    return work


async def save_job_summaries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or replace the summaries (each: ``job_id``, ``finished_at`` and ``WORK_FIELDS``)."""
    if not rows:
        return
    insert = dialect_insert(session)(JobWorkSummary)
    stmt = insert.on_conflict_do_update(
        index_elements=[JobWorkSummary.job_id],
        set_={name: insert.excluded[name] for name in ("finished_at", *WORK_FIELDS)},
    )
    await session.execute(stmt, list(rows))
    await session.flush()


WORK_SUMMARY_COLUMNS = tuple(getattr(JobWorkSummary, name) for name in WORK_FIELDS)
