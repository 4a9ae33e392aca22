"""Degenerate texts: what a style measure must never mistake for the author.

A classifier of "the author" vs "other writers" trained on fluent texts alone learns which
*words* the author uses; text with the author's words and no fluency (the author's own words
shuffled) or no words of anyone (random tokens, what a model with random weights writes) then
lands wherever the classifier's intercept puts it, often high. Adding such texts to the
"other writers" class, and scoring them as controls beside the models, makes a score that
ranks them last. Pure Python: the random-token text takes the tokenizer's ``decode``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence


def shuffled_words(texts: Sequence[str], *, seed: int) -> list[str]:
    """Each text with its own words in a random order (same words, same length, no syntax)."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        words = text.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def random_token_texts(
    decode: Callable[[list[int]], str],
    vocab_size: int,
    *,
    count: int,
    tokens: int,
    seed: int,
    skip: Sequence[int] = (),
) -> list[str]:
    """``count`` texts of ``tokens`` token ids drawn uniformly from the vocabulary (leaving out
    ``skip``, e.g. special tokens), decoded: the output of a model with random weights."""
    rng = random.Random(seed)
    banned = set(skip)
    out = []
    for _ in range(count):
        ids: list[int] = []
        while len(ids) < tokens:
            i = rng.randrange(vocab_size)
            if i not in banned:
                ids.append(i)
        out.append(decode(ids))
    return out


def cut_words(texts: Sequence[str], words: int) -> list[str]:
    """Each text cut to its first ``words`` words: real essays at a generation's length, so
    length-sensitive figures (distinct-n, repetition, style) compare like with like."""
    return [" ".join(t.split()[: max(words, 1)]) for t in texts]
