"""Exporting pairs: TRL JSONL or the seed CSV, streamed from a server-side cursor.

Memory stays flat in the number of rows: rows are read in batches and each batch is encoded
and handed on before the next is read.
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

from chatpgt.errors import InvalidInput
from chatpgt.pairs import repository
from chatpgt.pairs.formats import SEED_CSV_COLUMNS, prompt_messages, trl_record
from chatpgt.pairs.repository import AnyRow, PairFilters
from chatpgt.pairs.schemas import ExportFormat

BATCH_ROWS = 200
MEDIA_TYPES: dict[str, str] = {"jsonl": "application/jsonl", "csv": "text/csv; charset=utf-8"}


def jsonl_line(row: AnyRow) -> bytes:
    """One export line: TRL's conversational preference record (``prompt`` = the generation
    messages) plus id, job id, topic, confidence and the two model names."""
    record = trl_record(prompt_messages(row), row.chosen, row.rejected)
    record.update(
        id=row.id,
        job_id=row.job_id,
        topic=row.topic,
        confidence=row.confidence,
        chosen_model=row.chosen_model,
        rejected_model=row.rejected_model,
    )
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _jsonl_batch(rows: Sequence[AnyRow]) -> bytes:
    return b"".join(jsonl_line(row) for row in rows)


def _csv_chunk(rows: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def _csv_batch(rows: Sequence[AnyRow]) -> bytes:
    return _csv_chunk([[getattr(row, column) for column in SEED_CSV_COLUMNS] for row in rows])


async def _batches(
    session: AsyncSession, filters: PairFilters, fmt: ExportFormat
) -> AsyncIterator[tuple[bytes, int]]:
    if fmt not in MEDIA_TYPES:
        raise InvalidInput(f"Unknown export format {fmt!r}; use 'jsonl' or 'csv'.")
    if fmt == "csv":
        yield _csv_chunk([SEED_CSV_COLUMNS]), 0
    encode = _csv_batch if fmt == "csv" else _jsonl_batch
    async for rows in repository.stream_export_rows(session, filters, batch_size=BATCH_ROWS):
        yield encode(rows), len(rows)


async def iter_export(
    session: AsyncSession, filters: PairFilters, fmt: ExportFormat
) -> AsyncIterator[bytes]:
    """Every pair matching ``filters`` in id order, encoded as ``fmt``, in chunks of a few
    hundred rows. ``jsonl``: one ``jsonl_line`` per pair. ``csv``: a header row of
    ``SEED_CSV_COLUMNS`` then one row per pair, quoted as needed (texts may hold commas, quotes
    and newlines). The session must stay open until the iterator is exhausted or closed."""
    async for chunk, _ in _batches(session, filters, fmt):
        yield chunk


async def write_jsonl(session: AsyncSession, filters: PairFilters, path: str | Path) -> int:
    """Write every pair matching ``filters`` to ``path`` as TRL JSONL; the number of rows.

    The file appears whole or not at all: it is written next to ``path`` under a temporary
    name and renamed when complete (parent directories are created).
    """
    target = Path(path)
    await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    written = 0
    try:
        async with await anyio.open_file(partial, "wb") as handle:
            async for chunk, rows in _batches(session, filters, "jsonl"):
                await handle.write(chunk)
                written += rows
        await anyio.Path(partial).rename(target)
    except BaseException:
        await anyio.Path(partial).unlink(missing_ok=True)
        raise
    return written
