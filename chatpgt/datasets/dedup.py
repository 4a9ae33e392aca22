"""Near-duplicate scans of the datasets: MinHash-LSH (``chatpgt.pairs.near_duplicates``) over
candidate essays and the corpus essays, flags stored in ``near_duplicates``.

A scan walks the succeeded generations of the chosen jobs in id order, after indexing the
reference (corpus) essays of their topics: an essay whose best match (corpus essay, or an earlier
essay anywhere in the scan: same topic or not) reaches ``threshold`` is flagged in
``near_duplicates`` with that similarity and what it resembles; the earliest essay of a group
stays unflagged, so excluding the flagged ones keeps one of each. Pairs with a flagged essay are
left out of exports and statistics that set ``dedup_threshold`` (≥ the scan's threshold to mean
anything: nothing below it was recorded).

A scan is queued work (``POST /pairs/dedup``): a datagen worker runs :func:`scan` under the
scan's lease (``chatpgt.datasets.scan_runner``), never the API process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.pairs.near_duplicates import (
    DEFAULT_THRESHOLD,
    NUM_PERM,
    Flag,
    NearDuplicateIndex,
    check_threshold,
    minhash,
    shingle_hashes,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "NUM_PERM",
    "Flag",
    "NearDuplicateIndex",
    "ScanResult",
    "check_threshold",
    "minhash",
    "scan",
    "scan_texts",
    "shingle_hashes",
]


@dataclass
class ScanResult:
    essays: int = 0
    corpus_essays: int = 0
    flagged: dict[str, int] = field(default_factory=lambda: {"essay": 0, "corpus": 0})
    threshold: float = DEFAULT_THRESHOLD
    job_ids: list[int] = field(default_factory=list)


async def scan(
    session: AsyncSession,
    job_ids: Sequence[int] = (),
    threshold: float = DEFAULT_THRESHOLD,
    *,
    on_progress: Callable[[ScanResult], Awaitable[None]] | None = None,
) -> ScanResult:
    """Scan the essays of ``job_ids`` (every job when empty) and replace their flags; the
    caller commits. CPU-bound: ~0.6 ms an essay (``bench/dedup_bench.py``). ``on_progress``
    sees the counts so far once the corpus essays are indexed and after each batch of essays
    (the flags are written after the last one)."""
    from chatpgt.datasets import repository as dataset_repo

    index = NearDuplicateIndex(threshold)
    jobs = list(job_ids) or await dataset_repo.all_job_ids(session)
    result = ScanResult(threshold=threshold, job_ids=jobs)
    for topic_id, text in await dataset_repo.corpus_texts(session, jobs):
        index.add_corpus(topic_id, text)
        result.corpus_essays += 1
    if on_progress is not None:
        await on_progress(result)
    flags: list[Flag] = []
    async for rows in dataset_repo.stream_essays(session, jobs):
        # The hashing runs off the event loop (the worker's heartbeat keeps the lease meanwhile).
        found = await anyio.to_thread.run_sync(index.check_many, rows)
        result.essays += len(rows)
        for flag in found:
            flags.append(flag)
            result.flagged[flag.kind] += 1
        if on_progress is not None:
            await on_progress(result)
    await dataset_repo.replace_flags(session, jobs, [_row(f) for f in flags])
    return result


def _row(flag: Flag) -> dict[str, Any]:
    return {**flag.__dict__, "scanned_at": datetime.now(UTC)}


def scan_texts(texts: Iterable[str], threshold: float = DEFAULT_THRESHOLD) -> list[Flag]:
    """Flags of a sequence of essays (ids = positions), for benches and quick checks."""
    index = NearDuplicateIndex(threshold)
    return [f for i, text in enumerate(texts) if (f := index.check(i, 0, text)) is not None]
