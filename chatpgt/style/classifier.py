"""A style classifier: "this author" vs "other writers", scikit-learn TF-IDF + logistic regression.

Texts are cut into chunks of about ``chunk_words`` words before training, so that the classifier
learns the author's style at the length of a generation rather than the length of a whole essay
(a model's essays on held-out titles are a few hundred words; the author's are thousands). A
text is scored as the mean P(author) of its chunks.

Two feature sets exist on purpose: ``"char+word"`` (character 2–5-grams within word boundaries
and word 1–2-grams) is the evaluation classifier; ``"word"`` (word 1–3-grams only, another
regularisation) is what the datagen style judge uses (:mod:`chatpgt.style.judge`), so
the classifier that scores a model is never the one that picked its training pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import FeatureUnion, Pipeline

Features = Literal["char+word", "word"]
DEFAULT_CHUNK_WORDS = 250
MIN_TEXTS_PER_CLASS = 2
# Below this many chunks in a class, describe() warns that the score means little.
MIN_RELIABLE_CHUNKS = 30


class NotEnoughTexts(ValueError):
    """Too few texts of one class to train (or cross-validate) a classifier."""


def chunk(text: str, words: int) -> list[str]:
    """Consecutive pieces of about ``words`` words (the last one absorbs a short remainder)."""
    tokens = text.split()
    if not tokens:
        return []
    if len(tokens) <= words * 1.5:
        return [" ".join(tokens)]
    pieces = [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
    if len(pieces) > 1 and len(pieces[-1].split()) < words // 2:
        pieces[-2] = pieces[-2] + " " + pieces.pop()
    return pieces


def make_pipeline(features: Features, seed: int) -> Pipeline:
    word_ngrams = (1, 2) if features == "char+word" else (1, 3)
    parts: list[tuple[str, Any]] = [
        (
            "word",
            TfidfVectorizer(
                analyzer="word",
                ngram_range=word_ngrams,
                sublinear_tf=True,
                min_df=1,
                max_features=200_000,
                lowercase=True,
            ),
        )
    ]
    if features == "char+word":
        parts.append(
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(2, 5),
                    sublinear_tf=True,
                    min_df=1,
                    max_features=300_000,
                    lowercase=False,
                ),
            )
        )
    c = 10.0 if features == "char+word" else 3.0
    return Pipeline(
        [
            ("features", FeatureUnion(parts)),
            (
                "clf",
                LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed),
            ),
        ]
    )


@dataclass(slots=True)
class StyleClassifier:
    """A fitted classifier; ``cv_accuracy`` is its k-fold cross-validated *balanced* accuracy on
    chunks (the mean of both classes' recall: 0.5 is chance whatever the class sizes)."""

    pipeline: Pipeline
    features: Features
    chunk_words: int
    cv_accuracy: float | None
    cv_folds: int
    trained_on: dict[str, int] = field(default_factory=dict)

    @classmethod
    def train(
        cls,
        author: Sequence[str],
        other: Sequence[str],
        *,
        features: Features = "char+word",
        chunk_words: int = DEFAULT_CHUNK_WORDS,
        folds: int = 5,
        seed: int = 0,
    ) -> StyleClassifier:
        """Fit on ``author`` (label 1) vs ``other`` (label 0) texts, after cross-validating.

        Folds are over chunks, stratified; raises :class:`NotEnoughTexts` when a class has fewer
        than two chunks.
        """
        a = [c for t in author for c in chunk(t, chunk_words)]
        o = [c for t in other for c in chunk(t, chunk_words)]
        if len(a) < MIN_TEXTS_PER_CLASS or len(o) < MIN_TEXTS_PER_CLASS:
            raise NotEnoughTexts(
                f"the style classifier needs at least {MIN_TEXTS_PER_CLASS} texts of each class; "
                f"got {len(a)} by the author and {len(o)} by other writers"
            )
        texts = a + o
        labels = np.array([1] * len(a) + [0] * len(o))
        k = min(folds, len(a), len(o))
        accuracy = None
        if k >= 2:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            scores = cross_val_score(
                make_pipeline(features, seed),
                texts,
                labels,
                cv=splitter,
                scoring="balanced_accuracy",  # a plain accuracy rewards the larger class
            )
            accuracy = float(scores.mean())
        pipeline = make_pipeline(features, seed).fit(texts, labels)
        return cls(
            pipeline=pipeline,
            features=features,
            chunk_words=chunk_words,
            cv_accuracy=accuracy,
            cv_folds=k,
            trained_on={
                "author_texts": len(author),
                "other_texts": len(other),
                "author_chunks": len(a),
                "other_chunks": len(o),
            },
        )

    def score(self, texts: Sequence[str]) -> list[float]:
        """P(author) of each text: the mean over its chunks (0.0 for an empty text)."""
        out = []
        for text in texts:
            pieces = chunk(text, self.chunk_words)
            if not pieces:
                out.append(0.0)
                continue
            probs = self.pipeline.predict_proba(pieces)[:, 1]
            out.append(float(np.mean(probs)))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "model": "TF-IDF "
            + (
                "char_wb 2-5-grams + word 1-2-grams"
                if self.features == "char+word"
                else "word 1-3-grams"
            )
            + " -> logistic regression (balanced classes)",
            "chunk_words": self.chunk_words,
            "cv_accuracy": self.cv_accuracy,
            "cv_metric": "balanced accuracy",
            "cv_folds": self.cv_folds,
            **self.trained_on,
            **(
                {"warning": f"only {few} chunks in the smaller class: the score is unreliable"}
                if (
                    few := min(
                        self.trained_on.get("author_chunks", 0),
                        self.trained_on.get("other_chunks", 0),
                    )
                )
                < MIN_RELIABLE_CHUNKS
                else {}
            ),
        }
