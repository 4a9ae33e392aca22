"""Judged win rate against a reference, in both orders, raw and length-controlled.

For each title the judge sees the model's essay and the reference's twice: model as A, then model
as B. The model wins the title when it wins both orders (score 1), loses it when it loses both
(0); a split verdict is a tie (0.5) and also a *flip*: the judge followed the position, not the
essay. A failed judgment leaves the title out (counted).

The length-controlled win rate follows AlpacaEval 2: a logistic regression of the per-title
outcome on ``tanh(length difference / its standard deviation)``; the controlled rate is the
fitted probability at zero length difference, sigmoid(intercept). Judges that prefer longer
essays then stop rewarding a model for writing more.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatpgt.evaluation.stats import Interval, bootstrap, words

# judge(prompt, essay_a, essay_b) -> "A", "B", or None when the judgment failed
Judge = Callable[[str, str, str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Matchup:
    title: str
    model_first: str | None  # the verdict with the model's essay as A
    model_second: str | None  # the verdict with the model's essay as B
    model_words: int
    reference_words: int

    @property
    def judged(self) -> bool:
        return self.model_first is not None and self.model_second is not None

    @property
    def score(self) -> float:
        wins = (self.model_first == "A") + (self.model_second == "B")
        return wins / 2

    @property
    def flipped(self) -> bool:
        return self.judged and self.model_first == self.model_second


async def judge_both_orders(
    judge: Judge,
    prompts: Sequence[str],
    titles: Sequence[str],
    model_texts: Sequence[str],
    reference_texts: Sequence[str],
) -> list[Matchup]:
    out = []
    for prompt, title, mine, ref in zip(prompts, titles, model_texts, reference_texts, strict=True):
        first = await judge(prompt, mine, ref)
        second = await judge(prompt, ref, mine)
        out.append(Matchup(title, first, second, len(words(mine)), len(words(ref))))
    return out


def _win_rate(matchups: Sequence[Matchup]) -> float:
    return float(np.mean([m.score for m in matchups])) if matchups else math.nan


def length_controlled(matchups: Sequence[Matchup]) -> float:
    """sigmoid(intercept) of a logistic fit of the outcome on tanh(normalised length diff).

    A tie is two half-weighted rows (a win and a loss). Falls back to the raw rate when the
    outcomes are all one class (nothing to fit) or the lengths never differ.
    """
    if not matchups:
        return math.nan
    from sklearn.linear_model import LogisticRegression

    diff = np.array([m.model_words - m.reference_words for m in matchups], dtype=float)
    scores = np.array([m.score for m in matchups])
    if np.all(scores == scores[0]) and scores[0] in (0.0, 1.0):
        return float(scores[0])
    std = diff.std()
    x = np.tanh(diff / std) if std > 0 else np.zeros_like(diff)
    xs = np.concatenate([x, x])[:, None]
    ys = np.concatenate([np.ones_like(scores), np.zeros_like(scores)])
    weights = np.concatenate([scores, 1 - scores])
    keep = weights > 0
    fit = LogisticRegression(C=1e4, max_iter=1000).fit(
        xs[keep], ys[keep], sample_weight=weights[keep]
    )
    return float(1 / (1 + math.exp(-float(fit.intercept_[0]))))


def summarize(matchups: Sequence[Matchup], *, samples: int, seed: int) -> dict[str, Any]:
    """Win rate and length-controlled win rate (with intervals over titles), wins, ties, flips."""
    judged = [m for m in matchups if m.judged]
    out: dict[str, Any] = {
        "titles": len(matchups),
        "judged": len(judged),
        "failed": len(matchups) - len(judged),
        "wins": sum(1 for m in judged if m.score == 1),
        "losses": sum(1 for m in judged if m.score == 0),
        "ties": sum(1 for m in judged if m.score == 0.5),
        "flips": sum(1 for m in judged if m.flipped),
    }
    out["flip_rate"] = out["flips"] / len(judged) if judged else None
    if judged:
        rate: Interval = bootstrap(judged, _win_rate, samples=samples, seed=seed)
        lc: Interval = bootstrap(judged, length_controlled, samples=samples, seed=seed)
        out["win_rate"] = rate.as_dict()
        out["length_controlled_win_rate"] = lc.as_dict()
    return out
