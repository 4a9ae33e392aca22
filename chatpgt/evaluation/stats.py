"""Bootstrap intervals and descriptive statistics of texts. Pure Python and numpy."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_BOOTSTRAP_SAMPLES = 1000
_WORD = re.compile(r"\w+(?:'\w+)?")


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with its 95% bootstrap interval (percentile method)."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap(
    units: Sequence[Any],
    statistic: Callable[[Sequence[Any]], float],
    *,
    samples: int = DEFAULT_BOOTSTRAP_SAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``statistic`` of ``units`` with a percentile interval from ``samples`` resamples of the
    units (essays, titles) with replacement, drawn with ``seed``.

    The point estimate is the statistic of all units; the interval is widened to contain it (a
    skewed statistic such as a perplexity can put its point estimate at the edge of the
    percentile interval of a handful of essays).
    """
    if not units:
        raise ValueError("bootstrap needs at least one unit")
    value = float(statistic(units))
    rng = np.random.default_rng(seed)
    n = len(units)
    stats = np.empty(samples)
    for i in range(samples):
        picks = rng.integers(0, n, size=n)
        stats[i] = statistic([units[j] for j in picks])
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return Interval(value, value, value, n)
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return Interval(value, float(min(low, value)), float(max(high, value)), n)


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of all texts (Li et al. 2016); nan without n-grams."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        grams.extend(ngrams(words(text), n))
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of a text's n-grams that repeat an earlier n-gram of the same text (0: none)."""
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def descriptive(texts: Sequence[str], *, seed: int = 0, samples: int = 1000) -> dict[str, Any]:
    """Length distribution (words), distinct-1/2, repetition rate, each mean with an interval."""
    if not texts:
        return {"count": 0}
    lengths = [len(words(t)) for t in texts]
    reps = [repetition_rate(t) for t in texts]
    counts = Counter(lengths)
    return {
        "count": len(texts),
        "length_words": bootstrap(lengths, mean, seed=seed, samples=samples).as_dict(),
        "length_quantiles": {
            q: float(np.quantile(lengths, p))
            for q, p in (("min", 0), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1))
        },
        "lengths": lengths,
        "empty": counts.get(0, 0),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition_rate": bootstrap(reps, mean, seed=seed, samples=samples).as_dict(),
    }


def paired(
    a: Sequence[Any],
    b: Sequence[Any],
    statistic: Callable[[Sequence[Any], Sequence[Any]], float],
    *,
    samples: int = DEFAULT_BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> Interval:
    """``statistic(a, b)`` of two models measured on the same units (``a[i]`` and ``b[i]`` are
    one essay or title), with a *paired* bootstrap interval: each resample draws units, and both
    models keep their own values for the units drawn. The interval is of the comparison itself,
    so a model that is better on every essay gets an interval that says so even when the two
    marginal intervals overlap."""
    if len(a) != len(b):
        raise ValueError(f"paired measurements need the same units: {len(a)} vs {len(b)}")
    units = list(zip(a, b, strict=True))
    return bootstrap(
        units,
        lambda picked: statistic([x for x, _ in picked], [y for _, y in picked]),
        samples=samples,
        seed=seed,
    )


def ratio_of(
    statistic: Callable[[Sequence[Any]], float],
) -> Callable[[Sequence[Any], Sequence[Any]], float]:
    """``statistic(a) / statistic(b)``: e.g. the corpus-perplexity ratio of two models."""
    return lambda a, b: statistic(a) / statistic(b)


def mean_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """The mean of ``a[i] - b[i]``."""
    return mean([x - y for x, y in zip(a, b, strict=True)])
