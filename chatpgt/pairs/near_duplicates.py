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
# Word characters (``\w``) among the ASCII code points; other code points are looked up once
# each (``_is_word``) and remembered.
_WORD_ASCII = np.zeros(128, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _WORD_ASCII[_c] = True
_WORD_CHAR = re.compile(r"\w")
_NON_ASCII_WORD: dict[int, bool] = {}
# The polynomial word hash: sum(c_k * P**k) mod 2**64 over a word's code points, P odd (so it
# has an inverse mod 2**64 and a word's hash comes from the text's prefix sums), then mixed by
# MurmurHash3's 64-bit finalizer (every input bit reaches every output bit: without it, words of
# one or two letters that differ in their first letter shared their top bits); its low 32 bits.
_P = np.uint64(0x100000001B3)
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
# Multipliers that mix three word hashes into one shingle hash (odd 32-bit constants).
_MIX = (np.uint64(0x9E3779B1), np.uint64(0x85EBCA77), np.uint64(0xC2B2AE3D))
_MASK = np.uint64(0xFFFFFFFF)


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise InvalidInput(f"dedup threshold must be in (0, 1], not {threshold}.")


class _Powers:
    """P**k and P**-k mod 2**64 for k below a length, grown on demand (kept per process)."""

    def __init__(self) -> None:
        self.up: np.ndarray[Any, Any] = np.ones(0, dtype=np.uint64)
        self.down: np.ndarray[Any, Any] = np.ones(0, dtype=np.uint64)

    def upto(self, n: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        if len(self.up) < n:
            size = max(n, 2 * len(self.up), 1 << 16)
            with np.errstate(over="ignore"):
                self.up = np.cumprod(np.full(size, _P, dtype=np.uint64)) * _P_INV
                self.down = np.cumprod(np.full(size, _P_INV, dtype=np.uint64)) * _P
        return self.up[:n], self.down[:n]


_POWERS = _Powers()


def _is_word(code_points: np.ndarray[Any, np.dtype[np.uint32]]) -> np.ndarray[Any, Any]:
    word = np.zeros(len(code_points), dtype=bool)
    ascii_ = code_points < 128
    word[ascii_] = _WORD_ASCII[code_points[ascii_]]
    if not ascii_.all():
        others = code_points[~ascii_]
        for cp in np.unique(others).tolist():
            if cp not in _NON_ASCII_WORD:
                _NON_ASCII_WORD[cp] = _WORD_CHAR.match(chr(cp)) is not None
        wordy = [cp for cp in np.unique(others).tolist() if _NON_ASCII_WORD[cp]]
        word[~ascii_] = np.isin(others, wordy)
    return word


def word_hashes(text: str) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """32-bit hashes of the words of ``text`` (``\\w+`` runs, lower-cased), in order.

    Computed for the whole text at once in numpy (no Python call per word): a polynomial hash
    of each word's code points from the text's prefix sums. The same in every process (Python's
    ``hash`` is salted per process, which would make whether a borderline copy is caught depend
    on the process that scanned it)."""
    code_points = np.frombuffer(text.lower().encode("utf-32-le"), dtype=np.uint32)
    if len(code_points) == 0:
        return np.zeros(0, dtype=np.uint64)
    edges = np.flatnonzero(np.diff(_is_word(code_points).astype(np.int8), prepend=0, append=0))
    starts, ends = edges[0::2], edges[1::2]
    up, down = _POWERS.upto(len(code_points))
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(code_points) + 1, dtype=np.uint64)
        np.cumsum(code_points.astype(np.uint64) * up, out=prefix[1:])
        return _fmix64((prefix[ends] - prefix[starts]) * down[starts]) & _MASK


def _fmix64(h: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


def shingle_hashes(text: str) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """The 32-bit hashes of the word 3-shingles of ``text`` (a shorter text: of its words),
    repeats included (a MinHash ignores them)."""
    words = word_hashes(text)
    if len(words) < SHINGLE:
        return words
    n = len(words) - SHINGLE + 1
    with np.errstate(over="ignore"):
        mixed = words[:n] * _MIX[0] + words[1 : n + 1] * _MIX[1] + words[2 : n + 2] * _MIX[2]
    return mixed & _MASK


# datasketch's default scheme ("affine32"): each input hash is pre-mixed with MurmurHash3's
# 32-bit finalizer, then permutation k maps it to a_k * h + b_k mod 2**32. Computed here for a
# whole essay as one (shingles x permutations) array; ``tests/test_datasets.py`` checks that
# the values equal ``MinHash.update_batch``'s (which makes a Python call per shingle).
_TEMPLATE = MinHash(num_perm=NUM_PERM, seed=1, scheme="affine32")
_A, _B = (np.asarray(p, dtype=np.uint32) for p in _TEMPLATE.permutations)
_EMPTY = np.asarray(_TEMPLATE.hashvalues, dtype=np.uint32)


def _fmix32(h: np.ndarray[Any, np.dtype[np.uint32]]) -> np.ndarray[Any, np.dtype[np.uint32]]:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signature(text: str) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """The ``NUM_PERM`` MinHash values of the essay's shingle set."""
    hashes = shingle_hashes(text).astype(np.uint32)
    if len(hashes) == 0:
        return _EMPTY.copy()
    with np.errstate(over="ignore"):
        values = _fmix32(hashes)[:, None] * _A + _B
    return np.minimum(values.min(axis=0), _EMPTY)


def minhash(text: str) -> LeanMinHash:
    """The essay's MinHash (datasketch's, so ``MinHashLSH`` indexes it)."""
    return LeanMinHash(seed=_TEMPLATE.seed, hashvalues=signature(text), scheme="affine32")


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
            m = minhash(text)
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
        self.signatures[key] = m
        self.lsh.insert(key, m)
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
