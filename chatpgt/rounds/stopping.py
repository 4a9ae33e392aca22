"""The evaluation stop rule of a rounds run, as pure functions (no database, no I/O).

Each evaluated round's model is scored in one eval run next to the model it started from and,
when that is not the best model so far, the best one too: scores are compared within one eval
run only (the style classifier of an eval run learns from the database's candidate essays,
which grow every round, so its scores of two eval runs are on different scales).

A round **improved** when its score beats the best model so far (the start model before any
round improved) by more than nothing and by at least ``min_improvement``, in the metric's
direction; it is then the best model. The run stops (``no_improvement``) once ``patience``
evaluated rounds in a row did not improve and rounds are left to run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a run stands after its evaluated rounds."""

    # the round whose model is the best so far; 0: the start model (no round improved on it)
    best_round: int = 0
    # evaluated rounds in a row, up to the last, that did not improve on the best
    stale: int = 0

    def after(self, number: int, improved: bool) -> Standing:
        """The standing once round ``number`` was judged ``improved`` or not."""
        if improved:
            return Standing(best_round=number, stale=0)
        return Standing(best_round=self.best_round, stale=self.stale + 1)

    def stops(self, patience: int) -> bool:
        return self.stale >= patience


def standing(outcomes: Iterable[tuple[int, bool | None]]) -> Standing:
    """The standing after the rounds ``(number, improved)``, in order; a round not evaluated
    (``improved`` None) counts for nothing."""
    out = Standing()
    for number, improved in outcomes:
        if improved is not None:
            out = out.after(number, improved)
    return out


def improves(score: float, best: float, *, higher_is_better: bool, min_improvement: float) -> bool:
    """``score`` beats ``best`` (the best model's score in the same eval run) by more than
    nothing and by at least ``min_improvement``."""
    gain = score - best if higher_is_better else best - score
    return gain > 0 and gain >= min_improvement


def judge_round(
    before: Standing,
    number: int,
    score: float,
    best: float,
    *,
    higher_is_better: bool,
    min_improvement: float,
) -> tuple[bool, Standing]:
    """(whether round ``number`` improved, the standing after it), given its model's score and
    the best model's (``before.best_round``'s) score in its eval run."""
    improved = improves(
        score, best, higher_is_better=higher_is_better, min_improvement=min_improvement
    )
    return improved, before.after(number, improved)
