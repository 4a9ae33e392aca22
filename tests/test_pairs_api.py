"""Pairs, their statistics and exports, essays, judgments and providers through the real API.

Rows are written straight into Postgres (tests/factories.py); every expectation is recomputed
in the test from those rows, never from the code under test.
"""

from __future__ import annotations

import csv
import io
import itertools
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.datagen.schemas import EssayPage, JudgmentPage
from chatpgt.datasets.export import write_jsonl
from chatpgt.pairs.formats import SEED_CSV_COLUMNS
from chatpgt.pairs.models import Pair
from chatpgt.pairs.repository import PairFilters
from chatpgt.pairs.schemas import PairOut, PairPage, PairStats
from tests import factories
from tests.conftest import FAKE_PROVIDER_KEY

PROBLEM = "application/problem+json"
MODELS = ("writer-a", "writer-b", "writer-c")


@dataclass
class World:
    jobs: list[DatagenJob] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    judgments: list[Judgment] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)


def _essay(rng: random.Random, model: str, topic: str) -> str:
    # Texts with the characters exports get wrong: commas, quotes, newlines, non-ASCII.
    body = " ".join(
        rng.choice(["tide", "moon,", '"salt"', "sea\n", "ébène", "wave"])
        for _ in range(rng.randint(5, 60))
    )
    return f'{model} on "{topic}", part one:\n{body}\r\nThe end.'


async def build_world(session: AsyncSession, *, seed: int = 3) -> World:
    """Two jobs with three writers per topic, both judge orders per matchup (some flipped, some
    failed), a pair per agreeing matchup, one corpus pair, and a job with no pairs at all."""
    rng = random.Random(seed)
    world = World()
    for job_index, n_topics in enumerate((7, 3)):
        job = await factories.job(session)
        world.jobs.append(job)
        for t in range(n_topics):
            title = f'Job {job_index} topic {t}, "quoted"'
            reference = 'The real essay,\nwith a "quote".' if (job_index, t) == (1, 0) else None
            topic = await factories.topic(
                session, title, source="corpus" if reference else "manual", reference_text=reference
            )
            gens = [
                await factories.generation(
                    session,
                    job,
                    topic,
                    model,
                    _essay(rng, model, title),
                    cost_usd=f"0.00{rng.randint(1, 9)}",
                    prompt_tokens=rng.randint(10, 50),
                    completion_tokens=rng.randint(100, 900),
                )
                for model in MODELS
            ]
            world.generations += gens
            for a, b in itertools.combinations(gens, 2):
                first_winner = rng.choice("AB")
                kind = rng.choices(["agree", "flip", "failed"], weights=[6, 2, 1])[0]
                if kind == "agree":  # the same generation wins in both orders
                    second_winner = "B" if first_winner == "A" else "A"
                else:
                    second_winner = first_winner  # same position: a different generation
                ab = await factories.judgment(
                    session,
                    a,
                    b,
                    first_winner,
                    confidence=rng.randint(1, 10),
                    cost_usd="0.0100",
                    prompt_tokens=300,
                    completion_tokens=40,
                )
                ba = await factories.judgment(
                    session,
                    b,
                    a,
                    None if kind == "failed" else second_winner,
                    confidence=rng.randint(1, 10),
                    status="failed" if kind == "failed" else "succeeded",
                    cost_usd="0.0200",
                    prompt_tokens=310,
                    completion_tokens=45,
                )
                world.judgments += [ab, ba]
                if kind != "agree":
                    continue
                winner, loser = (a, b) if first_winner == "A" else (b, a)
                assert ab.confidence is not None and ba.confidence is not None
                world.pairs.append(
                    await factories.judged_pair(
                        session,
                        winner,
                        loser,
                        (ab.confidence + ba.confidence) / 2,
                        topic_title=title,
                        judgments=(ab, ba),
                    )
                )
            if reference:
                world.pairs.append(await factories.corpus_pair(session, topic, gens[0]))
    idle = await factories.job(session, status="failed")
    world.jobs.append(idle)
    await session.commit()
    return world


def _matches(pair: Pair, f: PairFilters) -> bool:
    return (
        (f.min_confidence is None or pair.confidence >= f.min_confidence)
        and (not f.job_ids or pair.job_id in f.job_ids)
        and (f.model is None or f.model in (pair.chosen_model, pair.rejected_model))
        and (f.source is None or pair.source == f.source)
    )


def _params(f: PairFilters) -> list[tuple[str, Any]]:
    params: list[tuple[str, Any]] = [("job_id", j) for j in f.job_ids]
    for name in ("min_confidence", "model", "source"):
        if getattr(f, name) is not None:
            params.append((name, getattr(f, name)))
    return params


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


async def _walk(
    api: httpx.AsyncClient, path: str, params: list[tuple[str, Any]], limit: int
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page_params = [*params, ("limit", limit)] + ([("cursor", cursor)] if cursor else [])
        resp = await api.get(path, params=page_params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert body["items"], "a cursor must not lead to an empty page"


async def test_min_confidence_pages_return_exactly_the_matching_pairs(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await build_world(session)
    expected = sorted(p.id for p in world.pairs if p.confidence >= 6)
    assert 5 < len(expected) < len(world.pairs)  # the threshold really splits the pairs

    items = await _walk(api, "/pairs", [("min_confidence", 6)], limit=4)
    ids = [item["id"] for item in items]
    assert ids == expected  # ascending, no duplicates, no gaps
    assert all(item["confidence"] >= 6 for item in items)


async def test_pair_fields_match_the_row_and_the_schema(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await build_world(session)
    resp = await api.get("/pairs", params={"limit": 500})
    assert resp.headers["content-type"] == "application/json"
    page = PairPage.model_validate(resp.json())
    assert page.next_cursor is None
    by_id = {p.id: p for p in world.pairs}
    assert [item.id for item in page.items] == sorted(by_id)
    for item in page.items:
        row = by_id[item.id]
        derived = {"verdicts", "system_prompt", "prompt_messages"}
        fields = [name for name in PairOut.model_fields if name not in derived]
        expected = {name: getattr(row, name) for name in fields}
        assert item.model_dump(exclude=derived) == expected
        # the factories' generations have no system prompt: the messages are the user prompt
        assert item.system_prompt is None
        assert [m.model_dump() for m in item.prompt_messages] == [
            {"role": "user", "content": row.prompt}
        ]
        assert [v.model_dump() for v in item.verdicts] == row.verdicts
    judged = next(item for item in page.items if item.source == "judged")
    assert len(judged.judgment_ids) == 2
    assert [v.order for v in judged.verdicts] == ["AB", "BA"]

    one = await api.get(f"/pairs/{judged.id}")
    assert one.status_code == 200
    assert PairOut.model_validate(one.json()) == judged
    _problem(await api.get("/pairs/987654321"), 404)


async def test_pair_filters_select_jobs_models_and_sources(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await build_world(session)
    job0, job1, idle = (j.id for j in world.jobs)
    for filters in (
        PairFilters(job_ids=(job1,)),
        PairFilters(job_ids=(job0, job1)),
        PairFilters(job_ids=(idle,)),
        PairFilters(model="writer-c"),
        PairFilters(source="corpus"),
        PairFilters(source="judged", min_confidence=7.5, model="writer-a"),
    ):
        items = await _walk(api, "/pairs", _params(filters), limit=3)
        expected = [p.id for p in sorted(world.pairs, key=lambda p: p.id) if _matches(p, filters)]
        assert [i["id"] for i in items] == expected, filters
    corpus = await _walk(api, "/pairs", [("source", "corpus")], limit=10)
    assert [(c["chosen_model"], c["chosen_generation_id"]) for c in corpus] == [("corpus", None)]


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/pairs", {"limit": 501}, 422),
        ("/pairs", {"limit": 0}, 422),
        ("/pairs", {"cursor": "not-a-cursor"}, 400),
        ("/pairs", {"cursor": "aWQ6LTE"}, 400),  # "id:-1"
        ("/pairs", {"min_confidence": 11}, 422),
        ("/pairs", {"min_confidence": "high"}, 422),
        ("/pairs", {"source": "invented"}, 422),
        ("/pairs", {"job_id": "x"}, 422),
        ("/pairs", {"job_id": 2**63}, 422),
        ("/pairs/abc", {}, 404),  # /pairs/{pair_id:int}: no such path
        ("/pairs/stats", {"min_confidence": -1}, 422),
        ("/pairs/export", {"format": "xml"}, 422),
        ("/pairs/export", {"format": "csv", "job_id": 0}, 422),
        ("/essays", {"cursor": "zzz"}, 400),
        ("/essays", {"limit": 10_000}, 422),
        ("/judgments", {"job_id": -3}, 422),
        ("/essays/1", {}, 404),
        ("/judgments/1", {}, 404),
    ],
)
async def test_bad_requests_are_problems(
    api: httpx.AsyncClient, clean_db: None, path: str, params: dict[str, Any], status: int
) -> None:
    _problem(await api.get(path, params=params), status)


def _length_stats(texts: list[str]) -> dict[str, float] | None:
    if not texts:
        return None
    lengths = [len(t) for t in texts]
    return {
        "mean": statistics.mean(lengths),
        "median": statistics.median(lengths),
        "min": min(lengths),
        "max": max(lengths),
    }


def _expected_stats(world: World, f: PairFilters) -> dict[str, Any]:
    pairs = [p for p in world.pairs if _matches(p, f)]
    wins = Counter(p.chosen_model for p in pairs)
    losses = Counter(p.rejected_model for p in pairs)
    buckets = Counter(min(10, max(1, int(p.confidence // 1))) for p in pairs)
    in_jobs = (lambda job_id: job_id in f.job_ids) if f.job_ids else (lambda job_id: True)

    by_matchup: dict[tuple[int, frozenset[int]], list[Judgment]] = {}
    for j in world.judgments:
        if in_jobs(j.job_id):
            key = (j.job_id, frozenset((j.generation_a_id, j.generation_b_id)))
            by_matchup.setdefault(key, []).append(j)
    both = [
        js
        for js in by_matchup.values()
        if len(js) == 2 and all(j.status == "succeeded" for j in js)
    ]
    flips = sum(1 for a, b in both if a.winner_generation_id != b.winner_generation_id)

    def cost(rows: list[Any]) -> dict[str, Any]:
        rows = [r for r in rows if in_jobs(r.job_id)]
        return {
            "count": len(rows),
            "cost_usd": float(sum((r.cost_usd for r in rows), Decimal(0))),
            "prompt_tokens": sum(r.prompt_tokens for r in rows),
            "completion_tokens": sum(r.completion_tokens for r in rows),
            "cache_hits": sum(bool(r.cache_hit) for r in rows),
            "saved_usd": float(sum((r.saved_usd or Decimal(0) for r in rows), Decimal(0))),
        }

    generations, judgments = cost(world.generations), cost(world.judgments)
    return {
        "counts": {
            "total": len(pairs),
            "judged": sum(p.source == "judged" for p in pairs),
            "corpus": sum(p.source == "corpus" for p in pairs),
            "imported": sum(p.source == "imported" for p in pairs),
        },
        "confidence_histogram": {b: buckets.get(b, 0) for b in range(1, 11)},
        "models": {m: (wins[m], losses[m]) for m in wins.keys() | losses.keys()},
        "matchups": Counter((p.chosen_model, p.rejected_model) for p in pairs),
        "lengths": {
            "chosen": _length_stats([p.chosen for p in pairs]),
            "rejected": _length_stats([p.rejected for p in pairs]),
        },
        "judge": (len(both), flips),
        "cost": (generations, judgments),
    }


@pytest.mark.parametrize(
    "make_filters",
    [
        lambda w: PairFilters(),
        lambda w: PairFilters(min_confidence=6),
        lambda w: PairFilters(job_ids=(w.jobs[1].id,)),
        lambda w: PairFilters(job_ids=(w.jobs[0].id, w.jobs[2].id), model="writer-a"),
        lambda w: PairFilters(job_ids=(w.jobs[2].id,)),  # no pairs at all
    ],
)
async def test_stats_agree_with_the_rows(
    api: httpx.AsyncClient, session: AsyncSession, make_filters: Any
) -> None:
    world = await build_world(session)
    filters: PairFilters = make_filters(world)
    resp = await api.get("/pairs/stats", params=_params(filters))
    assert resp.status_code == 200, resp.text
    stats = PairStats.model_validate(resp.json())
    want = _expected_stats(world, filters)

    assert_stats_match(stats, want)
    assert [b.bucket for b in stats.confidence_histogram] == list(range(1, 11))
    for m in stats.models:
        assert m.win_rate == pytest.approx(m.wins / (m.wins + m.losses))
    matchups, flips = want["judge"]
    assert stats.judge.flip_rate == (pytest.approx(flips / matchups) if matchups else None)
    generations, judgments = want["cost"]
    assert stats.cost.total_cost_usd == pytest.approx(
        generations["cost_usd"] + judgments["cost_usd"]
    )


def assert_stats_match(stats: Any, want: dict[str, Any]) -> None:
    """``stats`` (a PairStats) holds the counts, histogram, wins, matchups, lengths, judge
    figures and costs that ``_expected_stats`` computed from the rows."""
    assert stats.counts.model_dump() == want["counts"]
    assert {b.bucket: b.count for b in stats.confidence_histogram} == want["confidence_histogram"]
    assert {m.model: (m.wins, m.losses) for m in stats.models} == want["models"]
    assert {(m.chosen_model, m.rejected_model): m.count for m in stats.matchups} == want["matchups"]
    for side in ("chosen", "rejected"):
        got = getattr(stats.lengths, side)
        if want["lengths"][side] is None:
            assert got is None
        else:
            assert got.model_dump() == pytest.approx(want["lengths"][side])
    assert (stats.judge.matchups, stats.judge.flips) == want["judge"]
    generations, judgments = want["cost"]
    assert stats.cost.generations.model_dump() == pytest.approx(generations)
    assert stats.cost.judgments.model_dump() == pytest.approx(judgments)


async def test_flip_rate_counts_only_matchups_with_both_orders_succeeded(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    job = await factories.job(session)
    topic = await factories.topic(session, "Flip check")
    a, b, c, d = [
        await factories.generation(session, job, topic, m, "text") for m in ("m1", "m2", "m3", "m4")
    ]
    await factories.judgment(session, a, b, "A")  # a wins shown first...
    await factories.judgment(session, b, a, "B")  # ...and shown second: consistent
    await factories.judgment(session, a, c, "A")  # a wins shown first...
    await factories.judgment(session, c, a, "A")  # ...c wins shown first: a flip
    await factories.judgment(session, b, c, "B")
    await factories.judgment(session, c, b, None, status="failed")  # incomplete: not counted
    await factories.judgment(session, a, d, "A")  # one order only: not counted
    await session.commit()
    stats = (await api.get("/pairs/stats")).json()
    assert stats["judge"] == {"matchups": 2, "flips": 1, "flip_rate": 0.5}
    other = (await api.get("/pairs/stats", params={"job_id": job.id + 1})).json()
    assert other["judge"] == {"matchups": 0, "flips": 0, "flip_rate": None}


async def test_export_jsonl_loads_as_a_trl_dataset(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    import datasets

    world = await build_world(session)
    expected = sorted((p for p in world.pairs if p.confidence >= 6), key=lambda p: p.id)
    resp = await api.get("/pairs/export", params={"format": "jsonl", "min_confidence": 6})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/jsonl")
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(resp.content)

    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(ds) == len(expected)
    assert {"prompt", "chosen", "rejected", "id", "topic", "confidence"} <= set(ds.column_names)
    for record, pair in zip(ds, expected, strict=True):
        assert record["id"] == pair.id
        assert record["prompt"] == [{"role": "user", "content": pair.prompt}]
        assert record["chosen"] == [{"role": "assistant", "content": pair.chosen}]
        assert record["rejected"] == [{"role": "assistant", "content": pair.rejected}]
        assert (record["topic"], record["chosen_model"], record["rejected_model"]) == (
            pair.topic,
            pair.chosen_model,
            pair.rejected_model,
        )
        assert record["confidence"] == pair.confidence


async def test_export_csv_has_the_seed_columns_and_round_trips_texts(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await build_world(session)
    job1 = world.jobs[1].id
    expected = sorted((p for p in world.pairs if p.job_id == job1), key=lambda p: p.id)
    resp = await api.get("/pairs/export", params={"format": "csv", "job_id": job1})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(resp.content.decode("utf-8"), newline=""))
    assert tuple(reader.fieldnames or ()) == SEED_CSV_COLUMNS
    rows = list(reader)
    assert len(rows) == len(expected)
    for row, pair in zip(rows, expected, strict=True):
        assert row["human_label"] == ""  # nobody labelled these (tests/test_review_training.py)
        for column in SEED_CSV_COLUMNS[:-1]:
            value = getattr(pair, column)
            assert (float(row[column]) if column == "confidence" else row[column]) == value
    assert any("\n" in r["chosen"] and '"' in r["chosen"] and "," in r["chosen"] for r in rows)


async def test_export_streams_many_batches(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    job = await factories.job(session)
    topic = await factories.topic(session, "Bulk")
    a = await factories.generation(session, job, topic, "m1", "a", sample_index=0)
    b = await factories.generation(session, job, topic, "m2", "b", sample_index=1)
    session.add_all(
        Pair(
            job_id=job.id,
            topic_id=topic.id,
            source="judged",
            topic="Bulk",
            prompt=f"p{i}",
            chosen=f"chosen {i}",
            rejected="r",
            chosen_model="m1",
            rejected_model="m2",
            # a NULL chosen id never collides in the unique index over judged pairs
            chosen_generation_id=None,
            rejected_generation_id=b.id if i % 2 else a.id,
            judgment_reasoning="r",
            confidence=1 + (i % 10),
            judge_model="j",
            judgment_ids=[],
            verdicts=[],
        )
        for i in range(1_050)
    )
    await session.commit()
    async with api.stream("GET", "/pairs/export", params={"format": "jsonl"}) as resp:
        assert resp.status_code == 200
        lines = [line async for line in resp.aiter_lines() if line]
    assert len(lines) == 1_050
    assert [int(line.split('"id":')[1].split(",")[0]) for line in lines] == sorted(
        int(line.split('"id":')[1].split(",")[0]) for line in lines
    )

    out = tmp_path / "sub" / "train.jsonl"
    written = await write_jsonl(session, PairFilters(min_confidence=6), out)
    assert written == sum(1 for i in range(1_050) if 1 + (i % 10) >= 6)
    assert len(out.read_text().splitlines()) == written
    assert [p.name for p in out.parent.iterdir()] == ["train.jsonl"]  # no partial file left


async def test_essays_and_judgments_are_listed_and_fetched(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await build_world(session)
    job0 = world.jobs[0].id
    essays = await _walk(api, "/essays", [("job_id", job0), ("model", "writer-b")], limit=2)
    want = [g for g in world.generations if g.job_id == job0 and g.model == "writer-b"]
    assert [e["id"] for e in essays] == [g.id for g in want]
    EssayPage.model_validate({"items": essays, "next_cursor": None})
    first = (await api.get(f"/essays/{want[0].id}")).json()
    assert (first["text"], first["cost_usd"]) == (want[0].text, float(want[0].cost_usd))

    failed = await _walk(api, "/judgments", [("status", "failed")], limit=2)
    assert [j["id"] for j in failed] == [j.id for j in world.judgments if j.status == "failed"]
    in_job = await _walk(api, "/judgments", [("job_id", job0)], limit=7)
    assert [j["id"] for j in in_job] == [j.id for j in world.judgments if j.job_id == job0]
    JudgmentPage.model_validate({"items": in_job, "next_cursor": None})
    one = (await api.get(f"/judgments/{world.judgments[0].id}")).json()
    assert one["winner_generation_id"] == world.judgments[0].winner_generation_id
    assert one["generation_a_id"] == world.judgments[0].generation_a_id


async def test_providers_are_listed_without_keys(api: httpx.AsyncClient) -> None:
    resp = await api.get("/providers")
    assert resp.status_code == 200
    assert FAKE_PROVIDER_KEY not in resp.text
    providers = {p["name"]: p for p in resp.json()}
    assert {"openai", "openrouter", "fake", "fake-slow"} <= providers.keys()
    assert providers["fake"]["has_api_key"] is True
    assert providers["fake"]["api_key_env"] == "FAKE_PROVIDER_KEY"
    assert "api_key_file" not in providers["fake"]
    one = await api.get("/providers/fake-slow")
    assert one.json()["max_concurrency"] == 4
    _problem(await api.get("/providers/nope"), 404)
