"""Datagen end to end: the real API (uvicorn), Postgres, Redis, a Celery worker process and the
fake OpenAI-compatible provider server, with faults injected at the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT
from chatpgt.pairs.models import NearDuplicate, Pair
from tests import procs
from tests.conftest import FAKE_PROVIDER_KEY
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import settled_stats

pytestmark = pytest.mark.e2e


async def all_pages(api: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = await api.get("/pairs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items


async def test_job_makes_pairs_despite_faults(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    await fake.post(
        "/_control",
        json={
            "rate_5xx": 0.15,
            "rate_429": 0.1,
            "retry_after_s": 0.05,
            "position_bias": 0.25,
            "rate_malformed_judge": 0.1,
            "rate_timeout": 0.05,
            "hang_s": 3.5,  # past the client's 3 s timeout
            # and at least one of each fault, whatever the random draws
            "script": ["timeout", "503", "429"],
        },
    )
    titles = [
        f"Why {x} matters" for x in ("taste", "startups", "wealth", "schlep", "focus", "cities")
    ]
    body = job_body(titles, samples=2, pairing="all_pairs")
    created = await api.post("/datagen/jobs", json=body)
    assert created.status_code == 201, created.text
    job = await wait_job(api, created.json()["id"])
    assert job["status"] == "succeeded", job
    failed = job["generations"]["failed"] + job["judgments"]["failed"]
    assert job["outcome"] == ("produced_with_failures" if failed else "produced"), job
    assert sum(r["count"] for r in job["failure_summary"]) <= failed

    # Every planned item is terminal, counted once, and the counts reconcile with the rows.
    gens = job["generations"]
    assert gens["total"] == len(titles) * 3
    assert gens["done"] + gens["failed"] + gens["skipped"] == gens["total"]
    assert gens["pending"] == 0
    n_gen_rows = await session.scalar(select(func.count()).select_from(Generation))
    assert n_gen_rows == gens["total"]
    judgments = (await session.execute(select(Judgment))).scalars().all()
    assert job["judgments"]["total"] == len(judgments) > 0
    assert all(j.status in ("succeeded", "failed") for j in judgments)
    # A failed verdict never carries a winner; a malformed answer is recorded, not defaulted.
    assert all(j.winner is None for j in judgments if j.status == "failed")

    pairs = (await session.execute(select(Pair).order_by(Pair.id))).scalars().all()
    assert job["pairs"] == len(pairs) > 0
    by_id = {j.id: j for j in judgments}
    gen_rows = {g.id: g for g in (await session.execute(select(Generation))).scalars()}
    for p in pairs:
        ab, ba = (by_id[i] for i in p.judgment_ids)
        # both orders were judged, agreed, and the pair's confidence is their mean
        assert (ab.generation_a_id, ab.generation_b_id) == (ba.generation_b_id, ba.generation_a_id)
        assert ab.winner_generation_id == ba.winner_generation_id == p.chosen_generation_id
        assert p.confidence == (ab.confidence + ba.confidence) / 2
        chosen, rejected = gen_rows[p.chosen_generation_id], gen_rows[p.rejected_generation_id]
        # chosen and rejected answer the same prompt, the one the pair carries
        assert chosen.prompt == rejected.prompt == p.prompt
        assert (p.chosen, p.rejected) == (chosen.text, rejected.text)
    assert job["ties"] == sum(
        1
        for j in judgments
        for k in judgments
        if j.id < k.id
        and (j.generation_a_id, j.generation_b_id) == (k.generation_b_id, k.generation_a_id)
        and j.status == k.status == "succeeded"
        and j.winner_generation_id != k.winner_generation_id
    )

    # GET /pairs?min_confidence=6 returns exactly the pairs at or above 6, once each.
    served = await all_pages(api, {"min_confidence": 6, "limit": 3})
    expected = sorted(p.id for p in pairs if p.confidence >= 6)
    assert sorted(x["id"] for x in served) == expected
    assert all(x["confidence"] >= 6 for x in served)

    stats = (await api.get("/pairs/stats", params={"job_id": job["id"]})).json()
    assert stats["counts"]["total"] == len(pairs)
    stats6 = (await api.get("/pairs/stats", params={"min_confidence": 6})).json()
    assert stats6["counts"]["total"] == len(expected)

    # The export filters as the pages do (a random job may have no pair at 6 or above) ...
    export6 = await api.get("/pairs/export", params={"format": "jsonl", "min_confidence": 6})
    assert export6.status_code == 200
    assert sorted(json.loads(line)["id"] for line in export6.text.splitlines()) == expected
    # ... and the job's JSONL loads with `datasets` into TRL's conversational preference columns.
    export = await api.get("/pairs/export", params={"format": "jsonl", "job_id": job["id"]})
    assert export.status_code == 200
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(export.content)
    import datasets

    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(ds) == len(pairs)
    row = ds[0]
    # the generation's messages: the default system prompt, then the user prompt
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["prompt"][0]["content"] == DEFAULT_SYSTEM_PROMPT
    assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    assert len(row["chosen"]) == len(row["rejected"]) == 1

    # Token usage and cost are recorded per request and summed on the job.
    assert job["cost_usd"] > 0 and job["prompt_tokens"] > 0
    assert (
        await session.scalar(
            select(func.count())
            .select_from(Generation)
            .where(Generation.status == "succeeded", Generation.cost_usd <= 0)
        )
        == 0
    )

    faults_seen = (await settled_stats(fake))["by_outcome"]
    assert all(faults_seen.get(k, 0) >= 1 for k in ("timeout", "5xx", "429")), faults_seen

    # The provider key never shows up in what the service returns or stores.
    dump = json.dumps([job, served, stats]) + export.text
    assert FAKE_PROVIDER_KEY not in dump


async def test_idempotency_key_replays_the_same_job(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    body = job_body(["On idempotency"])
    headers = {"Idempotency-Key": "job-key-1"}
    first = await api.post("/datagen/jobs", json=body, headers=headers)
    again = await api.post("/datagen/jobs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = await api.post("/datagen/jobs", json=job_body(["Something else"]), headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert await session.scalar(select(func.count()).select_from(DatagenJob)) == 1
    assert (await wait_job(api, first.json()["id"]))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda b: b["generators"][0].update(provider="nope"), 400),
        (lambda b: b["judge"].update(provider="missing"), 400),
        (lambda b: b.update(generators=[]), 422),
        (lambda b: b["topics"].update(ids=[1]), 422),  # titles and ids together
        (lambda b: b.update(prompt_templates=["no title placeholder"]), 422),
        (lambda b: b.update(budget_usd=-1), 422),
        (lambda b: b["generators"][0].update(temperature=5), 422),
        (lambda b: b.update(generators=[{"provider": "fake", "model": "writer-a"}]), 422),
        (lambda b: b.update(unexpected=True), 422),
        (lambda b: b.update(dedup={"threshold": 0}), 422),
        (lambda b: b.update(dedup={"threshold": 1.5}), 422),
        (lambda b: b.update(dedup={"threshold": 0.7, "bogus": 1}), 422),
    ],
)
async def test_bad_job_requests_get_problems_and_write_nothing(
    api: httpx.AsyncClient, session: AsyncSession, mutate: Any, status: int
) -> None:
    body = job_body(["A topic that must not be created"])
    mutate(body)
    r = await api.post("/datagen/jobs", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == status
    assert await session.scalar(select(func.count()).select_from(DatagenJob)) == 0
    topics = (await api.get("/topics")).json()["items"]
    assert topics == []


async def test_unknown_ids_are_404_problems(api: httpx.AsyncClient, clean_db: None) -> None:
    for r in (await api.get("/datagen/jobs/999999"), await api.post("/datagen/jobs/999999/cancel")):
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_malformed_judge_output_is_retried_then_failed_never_a_winner(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    await fake.post("/_control", json={"rate_malformed_judge": 1.0})
    created = await api.post("/datagen/jobs", json=job_body(["On malformed judges", "On JSON"]))
    job = await wait_job(api, created.json()["id"])
    # Every judgment failed: the job says it produced nothing, and why (issue 10).
    assert job["status"] == "failed" and job["outcome"] == "nothing_produced", job
    assert job["judgments"]["failed"] == job["judgments"]["total"] == 4
    assert job["pairs"] == 0
    assert job["error"].startswith("no judgment succeeded (4 failed); first error: ")
    assert "unparseable judge answer" in job["error"]
    summary = job["failure_summary"]
    assert summary and all(r["stage"] == "judgment" for r in summary)
    assert all(r["provider"] == "fake" and r["model"] == "judge" for r in summary)
    assert all("unparseable judge answer" in r["reason"] for r in summary)
    assert sum(r["count"] for r in summary) == 4
    judgments = (await session.execute(select(Judgment))).scalars().all()
    for j in judgments:
        assert j.winner is None and j.winner_generation_id is None and j.confidence is None
        assert "unparseable" in (j.error or "")
        # the error says what the last answer held, quoting its start (issue 20)
        assert j.raw_answer and f"; the answer: {j.raw_answer.strip()[:40]}" in (j.error or "")
        assert j.attempts == 3  # the first answer and two parse retries
        assert j.raw_answer
    assert any(e["kind"] == "judgment" for e in job["errors"])


async def test_a_failure_rate_over_the_threshold_stops_the_job_early(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    """A broken provider (every essay empty) and max_failure_rate 0.5: the job stops once the
    first items are in instead of spending the budget; the rest is cancelled, nothing lost."""
    await fake.post("/_control", json={"rate_empty": 1.0, "latency_ms": 100})
    titles = [f"Failure rate topic {i}" for i in range(30)]
    body = {**job_body(titles, provider="fake-slow"), "max_failure_rate": 0.5}
    job = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert job["status"] == "failed" and job["stop_reason"] == "max_failure_rate", job
    assert job["outcome"] == "nothing_produced"
    assert "over max_failure_rate 0.5" in job["error"]
    assert "the provider returned an empty essay" in job["error"]
    g = job["generations"]
    assert g["total"] == 60 and g["pending"] == 0
    assert g["done"] + g["failed"] + g["skipped"] + g["cancelled"] == g["total"]
    assert 10 <= g["failed"] < g["total"] and g["cancelled"] > 0
    # Nothing lost: the counts are the rows', every row terminal.
    rows = dict(
        (
            await session.execute(
                select(Generation.status, func.count())
                .where(Generation.job_id == job["id"])
                .group_by(Generation.status)
            )
        ).all()
    )
    assert rows == {k: v for k, v in (("failed", g["failed"]), ("cancelled", g["cancelled"])) if v}
    assert job["failure_summary"] == [
        {
            "stage": "generation",
            "provider": "fake-slow",
            "model": m,
            "reason": "the provider returned an empty essay",
            "count": n,
        }
        for m, n in sorted(
            (
                await session.execute(
                    select(Generation.model, func.count())
                    .where(Generation.job_id == job["id"], Generation.status == "failed")
                    .group_by(Generation.model)
                )
            ).all(),
            key=lambda r: (-r[1], r[0]),
        )
    ]


async def test_budget_stops_new_requests_and_says_so(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    titles = [f"Budget topic {i}" for i in range(12)]
    body = job_body(titles, budget_usd=0.012)
    job = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert job["status"] == "succeeded"
    assert (job["outcome"] == "nothing_produced") == (job["pairs"] == 0), job
    assert job["stop_reason"] == "budget_exhausted"
    assert "budget_usd" in job["error"]
    assert 0 < job["cost_usd"] <= 0.012
    skipped = job["generations"]["skipped"] + job["judgments"]["skipped"]
    assert skipped > 0
    assert (
        job["generations"]["done"] + job["generations"]["failed"] + job["generations"]["skipped"]
        == job["generations"]["total"]
    )


async def test_cancel_keeps_what_is_done(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    import asyncio

    await fake.post("/_control", json={"latency_ms": 400})
    body = job_body([f"Slow topic {i}" for i in range(30)], provider="fake-slow")
    job_id = (await api.post("/datagen/jobs", json=body)).json()["id"]
    for _ in range(200):
        job = (await api.get(f"/datagen/jobs/{job_id}")).json()
        if job["generations"]["done"] >= 4:
            break
        await asyncio.sleep(0.1)
    r = await api.post(f"/datagen/jobs/{job_id}/cancel")
    assert r.status_code == 202
    job = await wait_job(api, job_id)
    assert job["status"] == "cancelled" and job["stop_reason"] == "cancelled"
    g = job["generations"]
    assert g["done"] >= 4 and g["cancelled"] > 0 and g["pending"] == 0
    assert g["done"] + g["failed"] + g["cancelled"] + g["skipped"] == g["total"]
    done = await session.scalar(
        select(func.count()).select_from(Generation).where(Generation.text.is_not(None))
    )
    assert done == g["done"]
    again = await api.post(f"/datagen/jobs/{job_id}/cancel")
    assert again.status_code == 202 and again.json()["status"] == "cancelled"


async def test_probability_judge_reads_the_verdict_from_letter_probabilities(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    body = job_body(["On probabilities", "On letters", "On judges"], pairing="all_pairs")
    body["judge"]["method"] = "ab_probability"
    job = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["judgments"]["done"] == job["judgments"]["total"] == 6
    judgments = (await session.execute(select(Judgment))).scalars().all()
    for j in judgments:
        raw = json.loads(j.raw_answer or "{}")
        assert abs(raw["p_a"] + raw["p_b"] - 1) < 1e-6
        assert j.winner == ("A" if raw["p_a"] >= raw["p_b"] else "B")
        assert 1 <= (j.confidence or 0) <= 10
        assert j.completion_tokens <= 1
    stats = (await fake.get("/_stats")).json()
    assert stats["by_model"]["judge"] == 6
    assert job["pairs"] == len((await session.execute(select(Pair))).scalars().all()) > 0


def _copy_with_changes(text: str, every: int) -> str:
    """``text`` with every ``every``-th word replaced."""
    words = text.split()
    return " ".join("CHANGED" if i % every == 0 else w for i, w in enumerate(words))


async def test_job_dedup_flags_a_copy_of_the_corpus_essay_and_does_not_pair_it(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    import random

    from tests import factories

    rng = random.Random(13)
    vocab = [f"w{i}" for i in range(2000)]
    corpus = " ".join(rng.choice(vocab) for _ in range(600))
    topic = await factories.topic(session, "How to copy", source="corpus", reference_text=corpus)
    await session.commit()
    # writer-b hands in the real essay with 3% of its words changed
    copied = await fake.post(
        "/_control", json={"essays": {"writer-b": _copy_with_changes(corpus, 33)}}
    )
    assert copied.status_code == 200, copied.text
    body = {**job_body(["How to copy"], samples=2, pairing="all_pairs")}

    deduped = await api.post("/datagen/jobs", json={**body, "dedup": {"threshold": 0.7}})
    assert deduped.status_code == 201, deduped.text
    job = await wait_job(api, deduped.json()["id"])
    assert job["status"] == "succeeded" and job["outcome"] == "produced", job
    assert job["request"]["dedup"] == {"threshold": 0.7, "against_corpus": True}
    assert job["near_duplicates"] == {"corpus": 1}, job
    gens = (
        (await session.execute(select(Generation).where(Generation.job_id == job["id"])))
        .scalars()
        .all()
    )
    copy = next(g for g in gens if g.model == "writer-b")
    assert copy.status == "succeeded"  # written, and then left out: not judged, not paired
    flag = await session.get(NearDuplicate, copy.id)
    assert flag is not None and flag.kind == "corpus" and flag.similar_topic_id == topic.id
    assert 0.7 <= flag.similarity < 1.0 and flag.job_id == job["id"]
    judgments = (
        (await session.execute(select(Judgment).where(Judgment.job_id == job["id"])))
        .scalars()
        .all()
    )
    assert len(judgments) == job["judgments"]["total"] == 2  # writer-a's two samples, both orders
    assert all(copy.id not in (j.generation_a_id, j.generation_b_id) for j in judgments)
    pairs = (await session.execute(select(Pair).where(Pair.job_id == job["id"]))).scalars().all()
    assert len(pairs) == job["pairs"] == 1
    assert all(copy.id not in (p.chosen_generation_id, p.rejected_generation_id) for p in pairs)

    # the same job without dedup judges and pairs the copy
    plain = await api.post("/datagen/jobs", json=body)
    assert plain.status_code == 201, plain.text
    job = await wait_job(api, plain.json()["id"])
    assert job["status"] == "succeeded" and job["near_duplicates"] == {}, job
    assert job["judgments"]["total"] == 6 and job["pairs"] == 3, job
    copy_id = (
        await session.execute(
            select(Generation.id).where(
                Generation.job_id == job["id"], Generation.model == "writer-b"
            )
        )
    ).scalar_one()
    pairs = (await session.execute(select(Pair).where(Pair.job_id == job["id"]))).scalars().all()
    assert any(copy_id in (p.chosen_generation_id, p.rejected_generation_id) for p in pairs)
