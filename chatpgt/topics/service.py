"""Topics: add by title, list, import from files and datasets, sample and resolve for a job.

Every function works inside the caller's session and leaves the commit to the caller (the
request or the task), so an import either lands whole or not at all.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.errors import InvalidInput, PayloadTooLarge
from chatpgt.paths import DataRoots
from chatpgt.topics import repository
from chatpgt.topics.normalize import display_title, normalize_title
from chatpgt.topics.schemas import (
    FileImport,
    HFImport,
    ImportResult,
    TopicOut,
    TopicPage,
    TopicRef,
    TopicsCreated,
)

_MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class _Row:
    title: str
    text: str | None


@dataclass(slots=True)
class _Stored:
    created: int
    existing: int
    duplicates: int
    reference_texts_added: int
    # one entry per distinct normalised title, in first-seen order
    topics: list[repository.TopicRow]


async def _store(
    session: AsyncSession, rows: Iterable[_Row], source: str, *, with_topics: bool = True
) -> _Stored:
    """Insert ``rows`` (titles already known to be non-blank) as topics of ``source``; rows with
    an essay become corpus topics, and existing topics without an essay receive it. With
    ``with_topics`` the stored rows of every distinct title are read back (ids for the caller)."""
    distinct: dict[str, repository.NewTopic] = {}
    duplicates = 0
    for row in rows:
        key = normalize_title(row.title)
        if key in distinct:
            duplicates += 1
            continue
        distinct[key] = repository.NewTopic(
            title=display_title(row.title),
            normalized_title=key,
            source="corpus" if row.text else source,
            reference_text=row.text or None,
        )
    created = await repository.insert_topics(session, list(distinct.values()))
    texts = [
        (key, topic.reference_text)
        for key, topic in distinct.items()
        if key not in created and topic.reference_text
    ]
    added = await repository.add_missing_reference_texts(session, texts)
    by_key = (
        await repository.topics_by_normalized_title(session, list(distinct)) if with_topics else {}
    )
    return _Stored(
        created=len(created),
        existing=len(distinct) - len(created),
        duplicates=duplicates,
        reference_texts_added=added,
        topics=[by_key[key] for key in distinct] if with_topics else [],
    )


async def create_topics(
    session: AsyncSession, titles: Sequence[str], *, max_titles: int, source: str = "manual"
) -> TopicsCreated:
    """Add ``titles`` that are new by normalised title; existing ones are kept as they are.

    Raises PayloadTooLarge above ``max_titles`` and InvalidInput for a title that is blank after
    normalisation. The answer lists every distinct title given, created or existing.
    """
    if len(titles) > max_titles:
        raise PayloadTooLarge(
            f"{len(titles)} titles in one request; the limit is {max_titles}.",
            limit=max_titles,
        )
    blank = [i for i, title in enumerate(titles) if not normalize_title(title)]
    if blank:
        raise InvalidInput("Blank titles cannot be topics.", positions=blank[:100])
    stored = await _store(session, (_Row(title, None) for title in titles), source)
    return TopicsCreated(
        created=stored.created,
        existing=stored.existing,
        topics=[TopicRef(id=t.id, title=t.title, source=t.source) for t in stored.topics],  # type: ignore[arg-type]
    )


async def list_topics(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    source: str | None = None,
    q: str | None = None,
) -> TopicPage:
    """One page of topics in id order. ``q`` matches a substring of the title, compared after
    the same normalisation as titles (case, width and surrounding punctuation do not matter).
    Raises InvalidInput for a cursor this API did not issue."""
    after_id = decode_cursor(cursor)
    contains = normalize_title(q) if q else None
    rows = await repository.list_topics(
        session, after_id=after_id, limit=limit + 1, source=source, contains=contains or None
    )
    page, more = rows[:limit], len(rows) > limit
    return TopicPage(
        items=[
            TopicOut(
                id=r.id,
                title=r.title,
                source=r.source,  # type: ignore[arg-type]
                has_reference_text=r.has_reference_text,
                created_at=r.created_at,
            )
            for r in page
        ],
        next_cursor=encode_cursor(page[-1].id) if more and page else None,
    )


async def import_topics(
    session: AsyncSession, request: FileImport | HFImport, *, roots: DataRoots
) -> ImportResult:
    """Read every row first, then insert in the caller's transaction, so a bad file (unreadable,
    undecodable, missing column) raises InvalidInput before anything is written. Rows with a
    blank title are skipped and counted; rows with an essay become corpus topics. A local path
    outside ``roots`` is refused (PathNotAllowed) before it is opened."""
    if isinstance(request, FileImport):
        roots.check(request.path, field="path")
        rows, total = await asyncio.to_thread(_read_file, request)
        source = "file"
    else:
        roots.check_source(request.dataset, field="dataset")
        rows, total = await asyncio.to_thread(_read_hf, request)
        source = "hf"
    kept = [row for row in rows if normalize_title(row.title)]
    stored = await _store(session, kept, source, with_topics=False)
    return ImportResult(
        rows=total,
        skipped=total - len(kept),
        duplicates=stored.duplicates,
        created=stored.created,
        existing=stored.existing,
        reference_texts_added=stored.reference_texts_added,
    )


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "…"


def _read_file(request: FileImport) -> tuple[list[_Row], int]:
    path = Path(request.path)
    # Say what is wrong with the path itself before guessing anything from its name.
    if not path.exists():
        raise InvalidInput(f"No file at {request.path!r}.", path=request.path)
    if path.is_dir():
        raise InvalidInput(f"{request.path!r} is a directory, not a file.", path=request.path)
    fmt = request.format
    if fmt is None:
        suffix = path.suffix.lower()
        if suffix not in (".txt", ".csv"):
            raise InvalidInput(
                f"Cannot tell the format of {request.path!r} from its extension; "
                "give format 'txt' or 'csv'.",
                path=request.path,
            )
        fmt = "txt" if suffix == ".txt" else "csv"
    essay_column = request.essay_column()
    if fmt == "txt" and essay_column:
        raise InvalidInput(
            "A txt file holds one title per line and no essays; import a csv for a corpus.",
            path=request.path,
        )
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if fmt == "txt":
                return _read_txt(handle, request.limit)
            return _read_csv(handle, request, essay_column)
    except InvalidInput:
        raise
    except FileNotFoundError:
        raise InvalidInput(f"No file at {request.path!r}.", path=request.path) from None
    except IsADirectoryError:
        raise InvalidInput(
            f"{request.path!r} is a directory, not a file.", path=request.path
        ) from None
    except PermissionError:
        raise InvalidInput(f"No permission to read {request.path!r}.", path=request.path) from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{request.path!r} is not UTF-8 text (byte {exc.start}).", path=request.path
        ) from None
    except (OSError, csv.Error) as exc:
        raise InvalidInput(
            f"Cannot read {request.path!r}: {_clip(str(exc))}", path=request.path
        ) from None


def _read_txt(handle: Iterable[str], limit: int | None) -> tuple[list[_Row], int]:
    rows: list[_Row] = []
    for line in handle:
        if limit is not None and len(rows) >= limit:
            break
        rows.append(_Row(line.rstrip("\r\n"), None))
    # A trailing newline is not a blank row.
    while rows and not rows[-1].title.strip():
        rows.pop()
    return rows, len(rows)


def _read_csv(
    handle: Iterable[str], request: FileImport, essay_column: str | None
) -> tuple[list[_Row], int]:
    # Essays exceed the csv module's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(handle)
    columns = reader.fieldnames or []
    if not columns:
        raise InvalidInput(f"{request.path!r} is empty (no header row).", path=request.path)
    _check_columns(columns, request.column, essay_column, request.path)
    rows: list[_Row] = []
    for record in reader:
        if request.limit is not None and len(rows) >= request.limit:
            break
        title = _cell(record.get(request.column)) or ""
        text = _cell(record.get(essay_column)) if essay_column else None
        rows.append(_Row(title, text if text and text.strip() else None))
    return rows, len(rows)


def _check_columns(
    columns: Sequence[str], column: str, essay_column: str | None, where: str
) -> None:
    missing = [c for c in (column, essay_column) if c and c not in columns]
    if missing:
        raise InvalidInput(
            f"{where!r} has no column {', '.join(repr(c) for c in missing)}; "
            f"its columns are {', '.join(repr(c) for c in columns)}.",
            missing_columns=missing,
            columns=list(columns),
        )


def _read_hf(request: HFImport) -> tuple[list[_Row], int]:
    # Imported here: only an import from a dataset needs the datasets library loaded.
    from chatpgt.sources import load_split

    ds = load_split(request.dataset, request.split, request.config, request.limit)
    essay_column = request.essay_column()
    _check_columns(ds.column_names, request.column, essay_column, request.dataset)
    titles = ds[request.column]
    texts = ds[essay_column] if essay_column else [None] * len(titles)
    rows = []
    for title, text in zip(titles, texts, strict=True):
        essay = _cell(text)
        rows.append(_Row(_cell(title) or "", essay if essay and essay.strip() else None))
    return rows, len(rows)


async def sample_topic_ids(
    session: AsyncSession,
    n: int,
    seed: int | None = None,
    *,
    source: str | None = None,
    exclude: Sequence[int] = (),
) -> list[int]:
    """``n`` distinct random topic ids (optionally only of ``source``, never those in
    ``exclude``). With a ``seed`` the draw is repeatable. Raises InvalidInput when fewer than
    ``n`` topics qualify, rather than returning a short sample."""
    if n < 1:
        raise InvalidInput("A sample needs at least one topic.", sample=n)
    ids = await repository.sample_topic_ids(session, n, seed=seed, source=source, exclude=exclude)
    if len(ids) < n:
        available = await repository.count_topics(session, source=source, exclude=exclude)
        raise InvalidInput(
            f"Asked to sample {n} topics but only {available} are available "
            "(add topics first: POST /topics or POST /topics/import).",
            sample=n,
            available=available,
        )
    return ids


async def resolve_topics(
    session: AsyncSession,
    titles: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
    sample: int | None = None,
    *,
    seed: int | None = None,
) -> list[int]:
    """The topic ids a datagen job works on: ``titles`` (created as manual topics when missing),
    then ``ids``, then ``sample`` more random topics not already chosen; duplicates removed,
    order kept. Raises InvalidInput when an id is unknown (listing them all), a title is blank,
    or the sample cannot be filled. Empty when nothing at all was asked for."""
    chosen: dict[int, None] = {}
    if titles:
        blank = [i for i, title in enumerate(titles) if not normalize_title(title)]
        if blank:
            raise InvalidInput("Blank titles cannot be topics.", positions=blank[:100])
        stored = await _store(session, (_Row(t, None) for t in titles), "manual")
        chosen.update((t.id, None) for t in stored.topics)
    if ids:
        found = await repository.existing_topic_ids(session, ids)
        unknown = sorted({i for i in ids if i not in found})
        if unknown:
            shown = ", ".join(map(str, unknown[:50]))
            raise InvalidInput(f"Unknown topic ids: {shown}.", unknown_topic_ids=unknown)
        chosen.update((i, None) for i in ids)
    if sample:
        drawn = await sample_topic_ids(session, sample, seed, exclude=list(chosen))
        chosen.update((i, None) for i in drawn)
    return list(chosen)
