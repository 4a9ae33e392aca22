"""Exporting pairs: TRL JSONL, the seed CSV or Parquet, streamed from a server-side cursor.

Memory stays flat in the number of rows: rows are read in batches, the next one read while the
last is encoded and handed on, never more than one ahead (Parquet: a row group at a time).
``balance_length`` drops pairs as ``chatpgt.datasets.balance`` describes, as the rows go by.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datasets.balance import LengthBalancer
from chatpgt.datasets.card import build_card
from chatpgt.datasets.hf import DATA_FILES, Layout
from chatpgt.datasets.parquet import ParquetStream
from chatpgt.db.read_ahead import read_ahead
from chatpgt.errors import InvalidInput
from chatpgt.pairs import repository
from chatpgt.pairs.formats import SEED_CSV_COLUMNS, prompt_messages, trl_record
from chatpgt.pairs.repository import AnyRow, PairFilters
from chatpgt.pairs.schemas import ExportFormat

BATCH_ROWS = 200
MEDIA_TYPES: dict[str, str] = {
    "jsonl": "application/jsonl",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}


def export_record(row: AnyRow) -> dict[str, Any]:
    """One exported pair: TRL's conversational preference record (``prompt`` = the generation
    messages) plus id, job id, topic, confidence, the two model names and the reviewers' verdict
    (``human_label``, null when unlabelled)."""
    record = trl_record(prompt_messages(row), row.chosen, row.rejected)
    record.update(
        id=row.id,
        job_id=row.job_id,
        topic=row.topic,
        confidence=row.confidence,
        chosen_model=row.chosen_model,
        rejected_model=row.rejected_model,
        human_label=row.human_label,
    )
    return record


def jsonl_line(row: AnyRow) -> bytes:
    """One export line: :func:`export_record` as JSON."""
    return orjson.dumps(export_record(row), option=orjson.OPT_APPEND_NEWLINE)


def _jsonl_batch(rows: Sequence[AnyRow]) -> bytes:
    return b"".join(jsonl_line(row) for row in rows)


def _csv_chunk(rows: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def _csv_batch(rows: Sequence[AnyRow]) -> bytes:
    return _csv_chunk([[getattr(row, column) for column in SEED_CSV_COLUMNS] for row in rows])


def check_format(fmt: str) -> None:
    if fmt not in MEDIA_TYPES:
        raise InvalidInput(f"Unknown export format {fmt!r}; use one of {', '.join(MEDIA_TYPES)}.")


async def row_batches(
    session: AsyncSession,
    filters: PairFilters,
    *,
    balancer: LengthBalancer | None = None,
) -> AsyncIterator[Sequence[AnyRow]]:
    """The matching pairs as ``EXPORT_COLUMNS`` rows in id order, in batches, less those the
    balancer drops. The next batch is read from the server-side cursor while the caller
    encodes and sends the last one (Postgres and this process work at the same time)."""
    batches = repository.stream_export_rows(session, filters, batch_size=BATCH_ROWS)
    async for rows in read_ahead(batches):
        kept = balancer.keep(rows) if balancer is not None else rows
        if kept:
            yield kept


async def length_balancer(session: AsyncSession, filters: PairFilters) -> LengthBalancer:
    """A balancer for the pairs matching ``filters`` (counts both sides first)."""
    longer, shorter = await repository.length_sides(session, filters)
    return LengthBalancer(longer, shorter)


async def _batches(
    session: AsyncSession,
    filters: PairFilters,
    fmt: ExportFormat,
    balancer: LengthBalancer | None = None,
) -> AsyncIterator[tuple[bytes, int]]:
    check_format(fmt)
    rows_in = row_batches(session, filters, balancer=balancer)
    if fmt == "parquet":
        stream = ParquetStream()
        async for rows in rows_in:
            yield stream.add([export_record(row) for row in rows]), len(rows)
        yield stream.close(), 0
        return
    if fmt == "csv":
        yield _csv_chunk([SEED_CSV_COLUMNS]), 0
    encode = _csv_batch if fmt == "csv" else _jsonl_batch
    async for rows in rows_in:
        yield encode(rows), len(rows)


async def iter_export(
    session: AsyncSession,
    filters: PairFilters,
    fmt: ExportFormat,
    *,
    balance_length: bool = False,
) -> AsyncIterator[bytes]:
    """Every pair matching ``filters`` in id order, encoded as ``fmt``, in chunks of a few
    hundred rows. ``jsonl``: one ``jsonl_line`` per pair. ``csv``: a header row of
    ``SEED_CSV_COLUMNS`` then one row per pair, quoted as needed (texts may hold commas, quotes
    and newlines). ``parquet``: one file (``chatpgt.datasets.parquet.SCHEMA``), a row group at a
    time. The session must stay open until the iterator is exhausted or closed."""
    balancer = await length_balancer(session, filters) if balance_length else None
    async for chunk, _ in _batches(session, filters, fmt, balancer):
        if chunk:
            yield chunk


async def write_export(
    session: AsyncSession,
    filters: PairFilters,
    path: str | Path,
    fmt: ExportFormat = "jsonl",
    *,
    balancer: LengthBalancer | None = None,
) -> int:
    """Write every pair matching ``filters`` to ``path`` as ``fmt``; the number of rows.

    The file appears whole or not at all: it is written next to ``path`` under a temporary
    name and renamed when complete (parent directories are created).
    """
    check_format(fmt)
    target = Path(path)
    await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    written = 0
    try:
        async with await anyio.open_file(partial, "wb") as handle:
            async for chunk, rows in _batches(session, filters, fmt, balancer):
                await handle.write(chunk)
                written += rows
        await anyio.Path(partial).rename(target)
    except BaseException:
        await anyio.Path(partial).unlink(missing_ok=True)
        raise
    return written


async def write_jsonl(session: AsyncSession, filters: PairFilters, path: str | Path) -> int:
    """:func:`write_export` as TRL JSONL."""
    return await write_export(session, filters, path, "jsonl")


async def export_card(
    session: AsyncSession, filters: PairFilters, *, layout: Layout, balance_length: bool = False
) -> str:
    """The dataset card of the export of ``filters`` whose data files follow ``layout``
    (``chatpgt.datasets.hf.DATA_FILES``); with ``balance_length`` it states what balancing
    drops (known before the export: exactly the majority side's surplus)."""
    balance = None
    if balance_length:
        balance = (await length_balancer(session, filters)).planned(
            await repository.count_pairs(session, filters)
        )
    return await build_card(session, filters, data_files=DATA_FILES[layout], balance=balance)
