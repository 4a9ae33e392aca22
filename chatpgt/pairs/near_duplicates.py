"""The near-duplicate index: MinHash-LSH over essays and the corpus essays (no database).

An essay is the set of its word 3-shingles (lower-cased words, punctuation dropped); MinHash
(``datasketch``, ``NUM_PERM`` permutations) estimates the Jaccard similarity of two such sets and
an LSH index (``MinHashLSH``) finds the candidates above a threshold without comparing every
pair. Used by the dataset scans (``chatpgt.datasets.dedup``) and by a datagen job's ``dedup``
option (``chatpgt.datagen.dedup_step``).

Three per cent of the words of a 1,000-word essay changed touch about 9% of its 3-shingles: an
estimated similarity near 0.83, well above the default threshold 0.7.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from chatpgt.errors import InvalidInput
from chatpgt.pairs.schemas import DEFAULT_DEDUP_THRESHOLD as DEFAULT_THRESHOLD

NUM_PERM = 64
SHINGLE = 3
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
