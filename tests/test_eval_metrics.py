"""The evaluation metrics on a tiny random llama with the real SmolLM2 tokenizer: perplexity
against a hand computation and against a model trained on the held-out text, the style
classifier on two synthetic authors, win rates, bootstrap intervals and descriptive stats."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import pytest

from chatpgt.evaluation import stats, winrate
from chatpgt.style.classifier import NotEnoughTexts, StyleClassifier
from chatpgt.training.corpus import Essay
from tests import fixtures_training as ft

tiny_model_dir = ft.tiny_model_dir

VOCAB_A = (
    "startup founder users growth ramen profitable investors hacker lisp painting wealth "
    "cities ambition schlep default alive determined relentlessly resourceful"
).split()
VOCAB_B = (
    "garden tomato compost soil harvest watering seedling mulch greenhouse pruning orchard "
    "blossom sunflower beetroot trellis irrigation meadow hedgerow"
).split()


def author_text(rng: random.Random, vocab: list[str], n_words: int = 120) -> str:
    sentences = []
    while sum(len(s.split()) for s in sentences) < n_words:
        k = rng.randint(6, 12)
        sentences.append(" ".join(rng.choice(vocab) for _ in range(k)).capitalize() + ".")
    return " ".join(sentences)


def structured_text(rng: random.Random, vocab: list[str], n_words: int = 120) -> str:
    """Sentences of one grammar over ``vocab``: a text whose word order carries style."""
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < n_words:
        a, b, c, d, e = (rng.choice(vocab) for _ in range(5))
        sentences.append(f"The {a} {b} the {c}, and then it {d} a {e}.")
    return " ".join(sentences)


def two_essays() -> list[Essay]:
    rng = random.Random(5)
    return [
        Essay("Short Essay", author_text(rng, VOCAB_A, 20)),
        # Long enough for two parts at max_length 96.
        Essay("Long Essay", author_text(rng, VOCAB_A, 60) + "\n\n" + author_text(rng, VOCAB_A, 60)),
    ]


def spec(max_length: int = 96):  # type: ignore[no-untyped-def]
    from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT
    from chatpgt.evaluation.perplexity import ExampleSpec
    from chatpgt.training.schemas import DEFAULT_CONTINUATION_TEMPLATE, DEFAULT_PROMPT_TEMPLATES

    return ExampleSpec(
        templates=DEFAULT_PROMPT_TEMPLATES,
        continuation_template=DEFAULT_CONTINUATION_TEMPLATE,
        context_words=8,
        max_length=max_length,
        seed=42,
        system_prompt=DEFAULT_SYSTEM_PROMPT,
    )


def load(model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    from chatpgt.training.recipes import load_tokenizer

    tokenizer, _ = load_tokenizer(str(model_dir))
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), tokenizer


def parts_of(essays: list[Essay], tokenizer, max_length: int = 192):  # type: ignore[no-untyped-def]
    from chatpgt.evaluation.perplexity import essay_parts
    from chatpgt.training.recipes import token_counters

    measure, count = token_counters(tokenizer, spec().system_prompt)
    return essay_parts(essays, spec(max_length), measure, count)


def sft_written_rows(tmp_path: Path, tokenizer, essays: list[Essay]):  # type: ignore[no-untyped-def]
    """What an SFT run writes: its eval split and ``data/eval.jsonl`` (its own code path,
    ``recipes._prepare_sft_data``), and the held-out record an evaluation builds from the run."""
    import csv
    import json

    from chatpgt.evaluation.heldout import _templates_drawn
    from chatpgt.training.recipes import _prepare_sft_data
    from chatpgt.training.schemas import SFTRequest

    path = tmp_path / "corpus.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "text"])
        writer.writerows((e.title, e.text) for e in essays)
    request = SFTRequest.model_validate(
        {
            "base_model": "unused",
            "corpus": str(path),
            "hyperparameters": {"eval_fraction": 0.5, "split_seed": 42, "max_length": 192},
            "prompts": {"continuation_context_words": 8},
        }
    )
    data = tmp_path / "data"
    data.mkdir()
    report = _prepare_sft_data(request, tokenizer, data, tmp_path)
    rows = [json.loads(line) for line in (data / "eval.jsonl").read_text().splitlines()]
    split_eval = report["split"]["eval"]
    drawn = _templates_drawn(split_eval, len(request.prompts.templates), 42)
    by_title = {e.title: e for e in essays}
    held = [by_title[e["title"]] for e in split_eval]
    return held, [drawn[e.title] for e in held], rows


def many_essays() -> list[Essay]:
    rng = random.Random(11)
    essays = []
    for i in range(10):
        paragraphs = 1 + (i % 3)
        text = "\n\n".join(author_text(rng, VOCAB_A, 30 + 15 * (i % 4)) for _ in range(paragraphs))
        essays.append(Essay(f"Essay number {i}", text))
    return essays


def test_evaluation_scores_exactly_the_sft_runs_eval_rows(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The rows the evaluation scores are those the SFT run wrote to eval.jsonl, system prompt,
    template and parts included, for the whole split and for any subset of it."""
    from chatpgt.evaluation.perplexity import essay_parts
    from chatpgt.training.recipes import token_counters

    _, tokenizer = load(tiny_model_dir)
    held, templates, written = sft_written_rows(tmp_path, tokenizer, many_essays())
    assert len(held) == 5 and len(set(templates)) > 1, "several templates are drawn"
    assert any(r["prompt"][0]["role"] == "system" for r in written)
    measure, count = token_counters(tokenizer, spec().system_prompt)
    parts = essay_parts(held, spec(192), measure, count, templates)
    assert [r for p in parts for r in p] == written
    assert sum(len(p) for p in parts) > len(held), "some essays are split into parts"
    # A subset (the first essay excluded, as max_essays or an exclusion would) keeps each
    # essay's own template and parts.
    subset = essay_parts(held[1:], spec(192), measure, count, templates[1:])
    assert [r for p in subset for r in p] == written[len(parts[0]) :]


def test_perplexity_equals_a_hand_computation(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from chatpgt.evaluation.perplexity import corpus_perplexity, essay_parts, score_essays
    from chatpgt.training.recipes import token_counters

    model, tokenizer = load(tiny_model_dir)
    essays, templates, written = sft_written_rows(tmp_path, tokenizer, many_essays())
    measure, count = token_counters(tokenizer, spec().system_prompt)
    parts = essay_parts(essays, spec(192), measure, count, templates)
    scores = score_essays(model, tokenizer, parts, [e.title for e in essays])

    # By hand, on the rows the SFT run wrote (not the evaluation's): render each row as text,
    # tokenize it, find where the answer starts by tokenizing the rendered prompt, and average
    # cross-entropy over the answer tokens.
    hand_parts, at = [], 0
    for p in parts:
        hand_parts.append(written[at : at + len(p)])
        at += len(p)
    assert at == len(written)
    total_nll, total_tokens = 0.0, 0
    for rows, score in zip(hand_parts, scores, strict=True):
        essay_nll, essay_tokens = 0.0, 0
        for row in rows:
            prompt_text = tokenizer.apply_chat_template(
                row["prompt"], tokenize=False, add_generation_prompt=True
            )
            full_text = tokenizer.apply_chat_template(
                row["prompt"] + row["completion"], tokenize=False
            )
            assert full_text.startswith(prompt_text)
            ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
            n_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
            labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids]), labels=labels)
            n = len(ids) - n_prompt
            essay_nll += float(out.loss) * n  # the mean over shifted labels, times their count
            essay_tokens += n
        assert score.tokens == essay_tokens
        assert score.nll == pytest.approx(essay_nll, rel=1e-4)
        total_nll += essay_nll
        total_tokens += essay_tokens
    assert corpus_perplexity(scores) == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)


def test_training_on_the_held_out_text_lowers_its_perplexity(tiny_model_dir: Path) -> None:
    import torch

    from chatpgt.evaluation.perplexity import completion_ids, corpus_perplexity, score_essays

    model, tokenizer = load(tiny_model_dir)
    essays = two_essays()
    parts = parts_of(essays, tokenizer)
    titles = [e.title for e in essays]
    before = corpus_perplexity(score_essays(model, tokenizer, parts, titles))

    rows = [completion_ids(tokenizer, r) for p in parts for r in p]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    torch.manual_seed(0)
    for step in range(12):
        ids, start = rows[step % len(rows)]
        labels = [-100] * start + ids[start:]
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = corpus_perplexity(score_essays(model, tokenizer, parts, titles))
    assert after < 0.7 * before, (before, after)


def test_style_classifier_separates_two_authors_and_scores_a_model_trained_on_one(
    tiny_model_dir: Path,
) -> None:
    import torch

    from chatpgt.training.recipes import generate_samples
    from chatpgt.training.schemas import SampleSpec

    rng = random.Random(1)
    a_texts = [author_text(rng, VOCAB_A, 200) for _ in range(12)]
    b_texts = [author_text(rng, VOCAB_B, 200) for _ in range(12)]
    clf = StyleClassifier.train(a_texts, b_texts, seed=0, chunk_words=60)
    assert clf.cv_accuracy is not None and clf.cv_accuracy >= 0.9
    held_a = clf.score([author_text(rng, VOCAB_A) for _ in range(5)])
    held_b = clf.score([author_text(rng, VOCAB_B) for _ in range(5)])
    assert min(held_a) > 0.5 > max(held_b)

    # A model trained a few dozen steps on author A's text: its essays score higher.
    model, tokenizer = load(tiny_model_dir)
    prompts = [f'Write an essay titled "Essay {i}".' for i in range(4)]
    sample = SampleSpec(prompts=prompts, max_new_tokens=40, temperature=1.0, top_p=1.0)
    before = stats.mean(
        clf.score([s["text"] for s in generate_samples(model, tokenizer, sample, seed=0)])
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(40):
        ids = tokenizer(a_texts[step % len(a_texts)])["input_ids"][:96]
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = stats.mean(
        clf.score([s["text"] for s in generate_samples(model, tokenizer, sample, seed=0)])
    )
    assert after > before + 0.2, (before, after)


def test_style_classifier_needs_both_classes() -> None:
    with pytest.raises(NotEnoughTexts):
        StyleClassifier.train(["one text only"], ["other a", "other b"])


def test_bootstrap_intervals_contain_the_point_estimate() -> None:
    rng = random.Random(0)
    for trial in range(20):
        values = [rng.expovariate(1.0) for _ in range(rng.randint(1, 15))]
        interval = stats.bootstrap(values, stats.mean, samples=200, seed=trial)
        assert interval.low <= interval.value <= interval.high
        assert interval.value == pytest.approx(stats.mean(values))
    # Seeded: the same seed gives the same interval; more data, a narrower one.
    wide = stats.bootstrap([1.0, 5.0, 2.0, 8.0], stats.mean, seed=3)
    assert wide == stats.bootstrap([1.0, 5.0, 2.0, 8.0], stats.mean, seed=3)
    narrow = stats.bootstrap([1.0, 5.0, 2.0, 8.0] * 25, stats.mean, seed=3)
    assert narrow.high - narrow.low < wide.high - wide.low


def test_descriptive_statistics() -> None:
    texts = ["the cat sat on the mat", "a b c a b c a b c", ""]
    d = stats.descriptive(texts, samples=50)
    assert d["lengths"] == [6, 9, 0] and d["empty"] == 1
    assert d["distinct_1"] == pytest.approx(8 / 15)
    # "a b c a", "b c a b", "c a b c", "a b c a" again...: 6 4-grams, 3 distinct
    assert stats.repetition_rate("a b c a b c a b c") == pytest.approx(0.5)
    assert stats.repetition_rate("one two three four five") == 0.0


def test_win_rates_count_ties_flips_and_control_for_length() -> None:
    async def prefers_longer(prompt: str, a: str, b: str) -> str | None:
        return "A" if len(a) >= len(b) else "B"

    async def always_a(prompt: str, a: str, b: str) -> str | None:
        return "A"

    titles = [f"t{i}" for i in range(12)]
    prompts = [f"Write about {t}" for t in titles]
    # The model is longer on 9 titles out of 12, by a lot.
    mine = ["word " * (60 if i < 9 else 10) for i in range(12)]
    ref = ["word " * 30 for _ in range(12)]
    matchups = asyncio.run(winrate.judge_both_orders(prefers_longer, prompts, titles, mine, ref))
    summary = winrate.summarize(matchups, samples=200, seed=0)
    assert (summary["wins"], summary["losses"], summary["ties"], summary["flips"]) == (9, 3, 0, 0)
    assert summary["win_rate"]["value"] == pytest.approx(0.75)
    # All of that win rate is length: controlled for it, far less.
    assert summary["length_controlled_win_rate"]["value"] < 0.6
    for key in ("win_rate", "length_controlled_win_rate"):
        assert summary[key]["low"] <= summary[key]["value"] <= summary[key]["high"]

    biased = asyncio.run(winrate.judge_both_orders(always_a, prompts, titles, mine, ref))
    s = winrate.summarize(biased, samples=50, seed=0)
    assert s["ties"] == s["flips"] == 12 and s["flip_rate"] == 1.0
    assert s["win_rate"]["value"] == 0.5


def test_paired_bootstrap_equals_a_hand_computation() -> None:
    """The paired interval resamples essays once for both models: by hand with the same draws."""
    import numpy as np

    from chatpgt.evaluation.perplexity import EssayScore, corpus_perplexity

    rng = random.Random(3)
    base = [EssayScore(f"e{i}", rng.uniform(200, 900), rng.randint(60, 300), 1) for i in range(8)]
    # A model better on every essay by 15-25% of its log-likelihood.
    tuned = [EssayScore(s.title, s.nll * rng.uniform(0.75, 0.85), s.tokens, 1) for s in base]
    got = stats.paired(tuned, base, stats.ratio_of(corpus_perplexity), samples=300, seed=5)
    draws = np.random.default_rng(5)
    ratios = []
    for _ in range(300):
        picks = draws.integers(0, len(base), size=len(base))
        ratios.append(
            corpus_perplexity([tuned[j] for j in picks])
            / corpus_perplexity([base[j] for j in picks])
        )
    value = corpus_perplexity(tuned) / corpus_perplexity(base)
    low, high = np.quantile(ratios, [0.025, 0.975])
    assert got.value == pytest.approx(value)
    assert got.low == pytest.approx(min(low, value)) and got.high == pytest.approx(max(high, value))
    assert got.high < 1, "better on every essay: the paired interval is below 1"
    # The marginal intervals of the two models overlap although every essay improved.
    a = stats.bootstrap(tuned, corpus_perplexity, samples=300, seed=5)
    b = stats.bootstrap(base, corpus_perplexity, samples=300, seed=5)
    assert a.high > b.low

    diff = stats.paired([0.9, 0.8, 0.7], [0.5, 0.6, 0.2], stats.mean_difference, seed=1)
    assert diff.value == pytest.approx((0.4 + 0.2 + 0.5) / 3) and diff.low > 0
    with pytest.raises(ValueError):
        stats.paired([1.0], [1.0, 2.0], stats.mean_difference)


def test_style_controls_rank_last_only_with_degenerate_negatives(tiny_model_dir: Path) -> None:
    """Trained with the author's shuffled words and random-token text as "other writers", the
    classifier ranks held-out author text > other writers > shuffled words ≈ random tokens;
    trained on fluent texts alone, the author's shuffled words score as the author."""
    from chatpgt.style.controls import random_token_texts, shuffled_words

    _, tokenizer = load(tiny_model_dir)
    rng = random.Random(2)

    def a_text() -> str:  # word order matters: shuffling it must show
        return structured_text(rng, VOCAB_A)

    def b_text() -> str:
        return structured_text(rng, VOCAB_B)

    author = [a_text() for _ in range(40)]
    other = [b_text() for _ in range(40)]

    def random_tokens(count: int, seed: int) -> list[str]:
        return random_token_texts(
            lambda ids: str(tokenizer.decode(ids)),
            len(tokenizer),
            count=count,
            tokens=150,
            seed=seed,
            skip=tokenizer.all_special_ids,
        )

    degenerate = shuffled_words(author[:20], seed=1) + random_tokens(20, 1)
    clf = StyleClassifier.train(author, other, degenerate=degenerate, chunk_words=60, seed=0)
    assert clf.unreliable() is None and clf.cv_auc is not None and clf.cv_auc > 0.9
    held = [a_text() for _ in range(6)]
    real = stats.mean(clf.score(held))
    others = stats.mean(clf.score([b_text() for _ in range(6)]))
    shuffled = stats.mean(clf.score(shuffled_words(held, seed=9)))
    noise = stats.mean(clf.score(random_tokens(6, 9)))
    assert real > 0.5 > max(shuffled, noise), (real, others, shuffled, noise)
    assert real > others

    # Without the degenerate texts, shuffled author words look like the author (word features
    # do not see order): the control that the degenerate class exists for.
    plain = StyleClassifier.train(author, other, chunk_words=60, seed=0)
    assert stats.mean(plain.score(shuffled_words(held, seed=9))) > 0.5


def test_an_unreliable_style_classifier_is_not_measured() -> None:
    rng = random.Random(4)
    # Too few chunks of other writers.
    few = StyleClassifier.train(
        [author_text(rng, VOCAB_A, 60) for _ in range(30)],
        [author_text(rng, VOCAB_B, 60) for _ in range(3)],
        chunk_words=60,
    )
    assert "too few chunks" in (few.unreliable() or "")
    assert "not_measured" in few.describe()
    # Two "writers" drawing on the same words: chance-level held-out accuracy.
    same = StyleClassifier.train(
        [author_text(rng, VOCAB_A, 60) for _ in range(30)],
        [author_text(rng, VOCAB_A, 60) for _ in range(30)],
        chunk_words=60,
        seed=1,
    )
    assert same.cv_auc is not None and same.cv_auc < 0.8
    assert "cannot tell the author" in (same.unreliable() or "")
