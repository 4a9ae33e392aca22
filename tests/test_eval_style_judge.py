"""The style-classifier judge for datagen: ranks by P(author), no position, confidence from the
score gap; never the evaluation classifier (other features, its own split, held-out excluded)."""

from __future__ import annotations

import random

from chatpgt.style.classifier import StyleClassifier
from chatpgt.style.judge import StyleJudge, confidence_from_gap, confidence_from_scores
from chatpgt.training.corpus import Essay
from tests.test_eval_metrics import VOCAB_A, VOCAB_B, author_text


def test_style_judge_ranks_the_authors_text_first_in_either_order() -> None:
    rng = random.Random(2)
    corpus = [Essay(f"A{i}", author_text(rng, VOCAB_A, 200)) for i in range(16)]
    other = [author_text(rng, VOCAB_B, 200) for _ in range(12)]
    held = ["A0", "A1"]
    judge = StyleJudge.train(corpus, other, seed=0, exclude_titles=held, chunk_words=60)
    assert not set(judge.trained_titles) & set(held)
    assert len(judge.trained_titles) == 7  # half of the 14 left
    assert judge.classifier.features == "word"

    a_like, b_like = author_text(rng, VOCAB_A, 80), author_text(rng, VOCAB_B, 80)
    mixed = author_text(rng, VOCAB_A, 40) + " " + author_text(rng, VOCAB_B, 40)
    ranked = judge.rank([b_like, mixed, a_like])
    assert [i for i, _ in ranked] == [2, 1, 0]

    first, second = judge.verdict(a_like, b_like), judge.verdict(b_like, a_like)
    assert (first.winner, second.winner) == ("A", "B")  # no flip: the essay wins, not the slot
    assert first.confidence == second.confidence >= 7
    close = judge.verdict(a_like, author_text(rng, VOCAB_A, 80))
    assert close.confidence <= 3
    assert "P(author)" in first.reasoning

    # The evaluation classifier is another model: other features, other training essays.
    evaluation = StyleClassifier.train([e.text for e in corpus[2:]], other, chunk_words=60)
    assert evaluation.features != judge.classifier.features
    assert judge.describe()["name"] == "style_classifier_judge"


def test_confidence_from_gap() -> None:
    assert confidence_from_gap(0.0) == 1
    assert confidence_from_gap(0.45) == 6 == confidence_from_gap(-0.45)
    assert confidence_from_gap(0.95) == 10


def test_confidence_from_scores_on_the_logit_scale() -> None:
    assert confidence_from_scores(0.3, 0.3) == 1
    assert confidence_from_scores(0.02, 0.10) == confidence_from_scores(0.10, 0.02)
    # Generated essays sit at a few percent: 0.02 vs 0.10 is a clear preference (logit gap 1.7,
    # Bradley-Terry 0.85), where the probability gap (0.08) gave confidence 2.
    assert confidence_from_scores(0.02, 0.10) == 7 > confidence_from_gap(0.08) == 2
    assert confidence_from_scores(0.5, 0.55) <= 2  # a logit gap of 0.2: hardly a preference
    assert confidence_from_scores(0.001, 0.999) == 10
    # The threshold 6 sits at a preference probability of about 0.78: odds 2.5 times as
    # high (logit gap 0.92, preference 0.71) fall short, 4 times (1.39, 0.80) pass.
    assert confidence_from_scores(0.2, 2.5 / 6.5) < 6 <= confidence_from_scores(0.2, 0.5)
