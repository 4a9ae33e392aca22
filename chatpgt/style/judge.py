"""The classifier side of ``judge.method = "style_classifier"`` for datagen.

A small model's A/B judge is pure position bias (the bundled 135M model picks "A" whatever the
essays). This judge has no position at all: a style classifier trained on the author's corpus vs
other writers scores each candidate alone; the higher P(author) wins and the confidence (1-10)
grows with the score gap. Judging (A, B) and (B, A) gives mirrored verdicts, so a flip is
impossible.

It is deliberately *not* the evaluation classifier (:class:`chatpgt.style.classifier
.StyleClassifier` with ``"char+word"`` features on the SFT training essays): it uses word 1–3-gram
features only, trains on its own seeded half of the corpus (``train_share``), and leaves out any
title given in ``exclude_titles`` (pass the held-out essays), so the classifier that picks the
training pairs never grades the trained model. Reports name it ``style_classifier_judge``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chatpgt.style.classifier import Features, StyleClassifier


class TitledText(Protocol):
    """An essay of the corpus (``chatpgt.training.corpus.Essay`` is one)."""

    @property
    def title(self) -> str: ...

    @property
    def text(self) -> str: ...

JUDGE_FEATURES: Features = "word"
JUDGE_SEED_OFFSET = 7919  # its own split, whatever seed the evaluation classifier uses


@dataclass(frozen=True, slots=True)
class StyleVerdict:
    winner: str  # "A" or "B"
    confidence: int  # 1..10
    score_a: float
    score_b: float

    @property
    def reasoning(self) -> str:
        return (
            f"style classifier P(author): A {self.score_a:.3f}, B {self.score_b:.3f} "
            f"(gap {abs(self.score_a - self.score_b):.3f})"
        )


def confidence_from_gap(gap: float) -> int:
    """1 at no difference, 10 at a gap of 0.9 or more in P(author), linear in between."""
    # floor(x + 0.5): round half up (Python's round() rounds half to even).
    return max(1, min(10, 1 + math.floor(10 * abs(gap) + 0.5)))


@dataclass(slots=True)
class StyleJudge:
    classifier: StyleClassifier
    trained_titles: list[str]

    @classmethod
    def train(
        cls,
        corpus: Sequence[TitledText],
        other: Sequence[str],
        *,
        seed: int = 0,
        train_share: float = 0.5,
        exclude_titles: Sequence[str] = (),
        chunk_words: int = 250,
    ) -> StyleJudge:
        """Fit on a seeded ``train_share`` of the corpus (minus ``exclude_titles``) vs ``other``."""
        excluded = set(exclude_titles)
        pool = [e for e in corpus if e.title not in excluded]
        rng = random.Random(seed + JUDGE_SEED_OFFSET)
        order = list(range(len(pool)))
        rng.shuffle(order)
        n = max(2, round(len(pool) * train_share)) if len(pool) >= 2 else len(pool)
        picked = [pool[i] for i in sorted(order[:n])]
        classifier = StyleClassifier.train(
            [e.text for e in picked],
            other,
            features=JUDGE_FEATURES,
            chunk_words=chunk_words,
            seed=seed + JUDGE_SEED_OFFSET,
        )
        return cls(classifier=classifier, trained_titles=[e.title for e in picked])

    def scores(self, texts: Sequence[str]) -> list[float]:
        return self.classifier.score(texts)

    def rank(self, candidates: Sequence[str]) -> list[tuple[int, float]]:
        """(index, P(author)) of every candidate, best first (ties: the lower index first)."""
        scored = list(enumerate(self.scores(candidates)))
        return sorted(scored, key=lambda item: (-item[1], item[0]))

    def verdict(self, essay_a: str, essay_b: str) -> StyleVerdict:
        """The pairwise verdict the datagen runner stores: no position, confidence from the gap.
        An exact tie returns ("A", 1), as ``confidence_from_ab`` does, so a two-order judge
        turns it into a tie."""
        score_a, score_b = self.scores([essay_a, essay_b])
        winner = "B" if score_b > score_a else "A"
        return StyleVerdict(winner, confidence_from_gap(score_a - score_b), score_a, score_b)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "style_classifier_judge",
            **self.classifier.describe(),
            "trained_essays": len(self.trained_titles),
        }
