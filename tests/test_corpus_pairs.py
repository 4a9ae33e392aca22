"""Corpus pairs teach style, not length: the real essay is cut to the generated essay's length
at a sentence end (the default, ``corpus_pair_length: "matched"``), or kept whole."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from chatpgt.datagen.models import Generation
from chatpgt.datagen.pairing import corpus_pair_rows, cut_to_length
from chatpgt.datagen.schemas import DatagenJobCreate

REAL = (
    "Startups are hard. Most of them die, and the founders rarely know why!\n\n"
    "The reason is usually simple: they made something nobody wanted. " * 20
)


@dataclass
class Topic:
    topic_id: int = 1
    title: str = "Why startups die"
    prompt: str = 'Write an essay titled "Why startups die".'
    reference_text: str | None = REAL


@pytest.mark.parametrize("words", [1, 5, 12, 40, 97])
def test_cut_to_length_ends_at_a_sentence_near_the_length(words: int) -> None:
    cut = cut_to_length(REAL, words)
    n = len(cut.split())
    assert words <= n <= words + max(words // 4, 1)
    assert REAL.startswith(cut)
    if n > words:  # extended only to finish a sentence
        assert cut.rstrip()[-1] in ".!?"
    assert cut_to_length("Short text.", 50) == "Short text."


def test_corpus_pairs_are_length_matched_unless_asked_whole() -> None:
    gen = Generation(id=7, model="writer-a", text=" ".join(["word"] * 30))
    (matched,) = corpus_pair_rows(3, Topic(), [gen], 8.0)
    assert 30 <= len(matched["chosen"].split()) <= 37 and REAL.startswith(matched["chosen"])
    assert matched["rejected"] == gen.text and matched["confidence"] == 8.0
    (whole,) = corpus_pair_rows(3, Topic(), [gen], 8.0, match_length=False)
    assert whole["chosen"] == REAL
    assert corpus_pair_rows(3, Topic(reference_text=None), [gen], 8.0) == []


def test_the_job_request_says_which() -> None:
    base = {
        "topics": {"titles": ["A"]},
        "generators": [{"provider": "p", "model": "m"}],
        "judge": {"provider": "p", "model": "j"},
        "include_corpus_pairs": True,
    }
    assert DatagenJobCreate.model_validate(base).corpus_pair_length == "matched"
    assert (
        DatagenJobCreate.model_validate({**base, "corpus_pair_length": "full"}).corpus_pair_length
        == "full"
    )
    with pytest.raises(ValueError):
        DatagenJobCreate.model_validate({**base, "corpus_pair_length": "longest"})
