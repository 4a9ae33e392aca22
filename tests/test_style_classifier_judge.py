"""``judge.method = "style_classifier"``: a classifier of the corpus essays vs other writers ranks
the two essays; no provider, no cost, no position (both orders mirror), and too little data
fails the judgments with the reason instead of naming a winner."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.api_client.requests import parse_judge
from chatpgt.datagen.judges import judge_method, needs_provider
from chatpgt.datagen.judges.style_classifier import NotTrainable, train_judge
from chatpgt.datagen.models import Judgment
from chatpgt.datagen.schemas import JudgeSpec
from chatpgt.pairs.models import Pair
from tests import procs
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import settled_stats
from tests.test_eval_metrics import VOCAB_A, VOCAB_B, author_text


def corpus_of(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(f"Author essay {i}", author_text(rng, VOCAB_A, 300)) for i in range(n)]


def test_the_author_like_essay_wins_both_orders_and_a_bigger_gap_is_surer() -> None:
    rng = random.Random(5)
    judge = train_judge(corpus_of(rng, 12), [author_text(rng, VOCAB_B, 300) for _ in range(10)])
    assert judge.classifier.features == "word"  # never the evaluation's char+word classifier

    a_like = author_text(rng, VOCAB_A, 150)
    b_like = author_text(rng, VOCAB_B, 150)
    # Mostly the author's words, some of the others': closer to the author, by less.
    leaning = author_text(rng, VOCAB_A, 90) + " " + author_text(rng, VOCAB_B, 60)
    far, near = judge.verdict(a_like, b_like), judge.verdict(a_like, leaning)
    assert (far.winner, judge.verdict(b_like, a_like).winner) == ("A", "B")
    assert (near.winner, judge.verdict(leaning, a_like).winner) == ("A", "B")
    assert judge.verdict(b_like, a_like).confidence == far.confidence  # a mirror, no position
    assert far.confidence > near.confidence >= 1
    assert far.confidence >= 6


def test_too_little_data_is_a_reason_not_a_winner() -> None:
    rng = random.Random(6)
    other = [author_text(rng, VOCAB_B, 200) for _ in range(4)]
    with pytest.raises(NotTrainable, match="at least 2 corpus essays.*has 1"):
        train_judge(corpus_of(rng, 1), other)
    with pytest.raises(NotTrainable, match="at least 2 other writers' essays.*has 0"):
        train_judge(corpus_of(rng, 4), [])
    # The same snapshot of texts trains once per process.
    corpus = corpus_of(rng, 4)
    assert train_judge(corpus, other) is train_judge(list(corpus), list(other))


def test_the_spec_takes_no_provider() -> None:
    assert not needs_provider("style_classifier") and needs_provider("json")
    assert judge_method("style_classifier").name == "style_classifier"
    spec = JudgeSpec.model_validate({"method": "style_classifier"})
    assert (spec.provider, spec.model) == ("builtin", "style_classifier")
    assert JudgeSpec.model_validate(spec.model_dump()) == spec  # a stored request reads back
    with pytest.raises(ValueError, match="asks no provider"):
        JudgeSpec.model_validate({"method": "style_classifier", "provider": "fake"})
    # The CLI's --judge takes the method's name alone.
    assert parse_judge("style_classifier") == {"method": "style_classifier"}
    assert parse_judge("fake:judge") == {"provider": "fake", "model": "judge"}


@pytest.mark.e2e
async def test_a_job_judged_by_the_style_classifier(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
    clean_db: None,
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    path = tmp_path / "author.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "text"])
        writer.writerows(corpus_of(rng, 6))
    imported = await api.post(
        "/topics/import",
        json={"source": "file", "path": str(path), "column": "title", "text_column": "text"},
    )
    assert imported.status_code == 200, imported.text

    def body(titles: list[str]) -> dict[str, object]:
        judge = {"method": "style_classifier"}
        return {**job_body(titles, samples=2, pairing="all_pairs"), "judge": judge}

    # No other job's essays yet: nothing to learn "other writers" from, so every judgment fails
    # with the reason, and no pair is made.
    first = await api.post("/datagen/jobs", json=body(["On style one", "On style two"]))
    assert first.status_code == 201, first.text
    job = await wait_job(api, first.json()["id"])
    assert job["status"] == "failed" and job["outcome"] == "nothing_produced", job
    assert job["pairs"] == 0 and job["judgments"]["failed"] == job["judgments"]["total"] == 12
    assert "at least 2 other writers' essays" in job["error"]
    failed = (await session.execute(select(Judgment))).scalars().all()
    assert all(j.winner is None and j.confidence is None for j in failed)

    # The first job's essays are the other writers now.
    titles = [f"On judging style {i}" for i in range(3)]
    second = await api.post("/datagen/jobs", json=body(titles))
    job = await wait_job(api, second.json()["id"])
    assert job["status"] == "succeeded" and job["outcome"] == "produced", job
    assert job["judgments"]["done"] == job["judgments"]["total"] == 3 * 6
    assert job["pairs"] > 0 and job["ties"] == 0

    judgments = (
        (await session.execute(select(Judgment).where(Judgment.job_id == job["id"])))
        .scalars()
        .all()
    )
    assert {(j.judge_provider, j.judge_model) for j in judgments} == {
        ("builtin", "style_classifier")
    }
    assert all(j.cost_usd == 0 and j.prompt_tokens == j.completion_tokens == 0 for j in judgments)
    by_order = {(j.generation_a_id, j.generation_b_id): j for j in judgments}
    for (a, b), j in by_order.items():  # both orders name the same essay: zero flips
        assert j.winner_generation_id == by_order[(b, a)].winner_generation_id
        assert j.confidence == by_order[(b, a)].confidence
        raw = json.loads(j.raw_answer or "{}")
        assert raw["classifier"]["name"] == "style_classifier_judge"
        assert raw["classifier"]["features"] == "word"
    flips = (await api.get("/pairs/stats", params={"job_id": job["id"]})).json()
    assert flips["counts"]["total"] == job["pairs"]
    pairs = (await session.execute(select(Pair).where(Pair.job_id == job["id"]))).scalars().all()
    assert pairs and {p.judge_model for p in pairs} == {"style_classifier"}
    assert job["cost_usd"] > 0  # the writers cost; the judge did not
    assert sum(float(j.cost_usd) for j in judgments) == 0

    # The judge's provider was never asked: the fake server saw only the writers.
    seen = (await settled_stats(fake))["by_model"]
    assert set(seen) <= {"writer-a", "writer-b"} and seen, seen
