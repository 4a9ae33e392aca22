"""Near-duplicate control: MinHash-LSH over candidate essays and the corpus essays.

An essay is the set of its word 3-shingles (lower-cased words, punctuation dropped); MinHash
(``datasketch``, ``NUM_PERM`` permutations) estimates the Jaccard similarity of two such sets and
an LSH index (``MinHashLSH``) finds the candidates above a threshold without comparing every
pair. A scan walks the succeeded generations of the chosen jobs in id order, after indexing the
reference (corpus) essays of their topics: an essay whose best match (corpus essay, or an earlier
essay anywhere in the scan: same topic or not) reaches ``threshold`` is flagged in
``near_duplicates`` with that similarity and what it resembles; the earliest essay of a group
stays unflagged, so excluding the flagged ones keeps one of each. Pairs with a flagged essay are
left out of exports and statistics that set ``dedup_threshold`` (≥ the scan's threshold to mean
anything: nothing below it was recorded).

Three per cent of the words of a 1,000-word essay changed touch about 9% of its 3-shingles: an
estimated similarity near 0.83, well above the default threshold 0.7.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.errors import InvalidInput

NUM_PERM = 64
SHINGLE = 3
DEFAULT_THRESHOLD = 0.7
LSH_MAX_THRESHOLD = 0.95
_WORD = re.compile(r"\w+")
# Multipliers that mix three word hashes into one shingle hash (odd 32-bit constants).
_MIX = (np.uint64(0x9E3779B1), np.uint64(0x85EBCA77), np.uint64(0xC2B2AE3D))
_MASK = np.uint64(0xFFFFFFFF)


def _identity(value: int) -> int:
    return value


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise InvalidInput(f"dedup threshold must be in (0, 1], not {threshold}.")


def shingle_hashes(text: str) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """The 32-bit hashes of the word 3-shingles of ``text`` (a shorter text: of its words),
    repeats included (a MinHash ignores them). Words are hashed with CRC-32: the same in every
    process (Python's ``hash`` is salted per process, which made whether a borderline copy was
    caught depend on the process that scanned it)."""
    words = np.fromiter(
        (zlib.crc32(w.encode()) for w in _WORD.findall(text.lower())), dtype=np.uint64
    )
    if len(words) < SHINGLE:
        return words
    n = len(words) - SHINGLE + 1
    mixed = words[:n] * _MIX[0] + words[1 : n + 1] * _MIX[1] + words[2 : n + 2] * _MIX[2]
    return mixed & _MASK


# Built once: a MinHash computes its permutations on creation (~1 ms), a copy reuses them.
_TEMPLATE = MinHash(num_perm=NUM_PERM, hashfunc=_identity)


def minhash(text: str) -> MinHash:
    m = _TEMPLATE.copy()
    m.update_batch(shingle_hashes(text).tolist())
    return m


@dataclass
class Flag:
    generation_id: int
    job_id: int
    kind: str  # essay | corpus
    similar_generation_id: int | None
    similar_topic_id: int | None
    similarity: float


@dataclass
class NearDuplicateIndex:
    """The LSH index of one scan: corpus essays first, then each essay after it is checked."""

    threshold: float = DEFAULT_THRESHOLD
    lsh: MinHashLSH = field(init=False)
    signatures: dict[str, LeanMinHash] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        # Candidates are verified by their estimated similarity, so the banding is tuned for
        # few false negatives (a missed copy) at the cost of more false candidates.
        # Its banding needs a threshold below ~0.95 (at least two bands); above, it gathers
        # candidates at 0.95 and the check keeps those that reach ``threshold``.
        self.lsh = MinHashLSH(
            threshold=min(self.threshold, LSH_MAX_THRESHOLD), num_perm=NUM_PERM, weights=(0.1, 0.9)
        )

    def add_corpus(self, topic_id: int, text: str) -> None:
        key = f"c{topic_id}"
        if key not in self.signatures:
            m = LeanMinHash(minhash(text))
            self.signatures[key] = m
            self.lsh.insert(key, m)

    def check(self, generation_id: int, job_id: int, text: str) -> Flag | None:
        """Flag the essay if it nearly copies an indexed one; then index it."""
        m = minhash(text)
        best: tuple[float, str] | None = None
        for key in self.lsh.query(m):
            similarity = float(m.jaccard(self.signatures[key]))
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, key)
        key = f"g{generation_id}"
        lean = LeanMinHash(m)  # no permutations kept: ~0.5 KB an essay
        self.signatures[key] = lean
        self.lsh.insert(key, lean)
        if best is None:
            return None
        similarity, other = best
        corpus = other.startswith("c")
        return Flag(
            generation_id=generation_id,
            job_id=job_id,
            kind="corpus" if corpus else "essay",
            similar_generation_id=None if corpus else int(other[1:]),
            similar_topic_id=int(other[1:]) if corpus else None,
            similarity=similarity,
        )

    def check_many(self, rows: Sequence[tuple[int, int, str]]) -> list[Flag]:
        """:meth:`check` each (generation id, job id, text) in order; the flags."""
        return [f for g, j, text in rows if (f := self.check(g, j, text)) is not None]


@dataclass
class ScanResult:
    essays: int = 0
    corpus_essays: int = 0
    flagged: dict[str, int] = field(default_factory=lambda: {"essay": 0, "corpus": 0})
    threshold: float = DEFAULT_THRESHOLD
    job_ids: list[int] = field(default_factory=list)


async def scan(
    session: AsyncSession, job_ids: Sequence[int] = (), threshold: float = DEFAULT_THRESHOLD
) -> ScanResult:
    """Scan the essays of ``job_ids`` (every job when empty) and replace their flags; the
    caller commits. CPU-bound: ~1 ms an essay (``bench/dedup_bench.py``)."""
    from chatpgt.datasets import repository as dataset_repo

    index = NearDuplicateIndex(threshold)
    jobs = list(job_ids) or await dataset_repo.all_job_ids(session)
    result = ScanResult(threshold=threshold, job_ids=jobs)
    for topic_id, text in await dataset_repo.corpus_texts(session, jobs):
        index.add_corpus(topic_id, text)
        result.corpus_essays += 1
    flags: list[Flag] = []
    async for rows in dataset_repo.stream_essays(session, jobs):
        # The hashing runs off the event loop (an API process keeps answering meanwhile).
        found = await anyio.to_thread.run_sync(index.check_many, rows)
        result.essays += len(rows)
        for flag in found:
            flags.append(flag)
            result.flagged[flag.kind] += 1
    await dataset_repo.replace_flags(session, jobs, [_row(f) for f in flags])
    return result


def _row(flag: Flag) -> dict[str, Any]:
    return {**flag.__dict__, "scanned_at": datetime.now(UTC)}


def scan_texts(texts: Iterable[str], threshold: float = DEFAULT_THRESHOLD) -> list[Flag]:
    """Flags of a sequence of essays (ids = positions), for benches and quick checks."""
    index = NearDuplicateIndex(threshold)
    return [f for i, text in enumerate(texts) if (f := index.check(i, 0, text)) is not None]
