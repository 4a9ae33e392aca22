"""Datasets through the real API, CLI and Postgres: Parquet and Hugging Face formats that
``datasets`` and TRL load unchanged, the dataset card against GET /pairs/stats, exact bias
figures, length balancing, near-duplicate scans (queued, run by a real datagen worker, swept
when their worker died) and bad input.

Rows are written straight into Postgres (tests/factories.py) with figures chosen in advance.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen.models import DatagenJob, Generation
from chatpgt.datasets.models import DedupScan
from chatpgt.db.base import utcnow
from chatpgt.orchestration.tasks import DATAGEN_SWEEP
from chatpgt.pairs.models import NearDuplicate
from tests import factories, procs
from tests.fixtures_training import tiny_model_dir  # noqa: F401 - fixture

PROBLEM = "application/problem+json"


def words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def chars(n: int, tag: str) -> str:
    """A text of exactly ``n`` characters."""
    return (tag + " " + "x" * n)[:n]


async def _gen(
    session: AsyncSession, job: DatagenJob, topic: Any, model: str, text: str, sample: int = 0
) -> Generation:
    return await factories.generation(session, job, topic, model, text, sample_index=sample)


async def bias_world(session: AsyncSession) -> tuple[DatagenJob, DatagenJob]:
    """Two jobs whose length, position and win figures are known (see the test)."""
    job1 = await factories.job(session)
    job2 = await factories.job(session)
    spec1 = [(100, 50, "writer-a"), (80, 120, "writer-a"), (200, 10, "writer-b")]
    spec2 = [(30, 60, "writer-a"), (40, 40, "writer-b")]
    gens: dict[int, list[Generation]] = {job1.id: [], job2.id: []}
    for job, spec in ((job1, spec1), (job2, spec2)):
        for i, (chosen_len, rejected_len, winner) in enumerate(spec):
            topic = await factories.topic(session, f"Bias {job.id} {i}")
            loser = "writer-b" if winner == "writer-a" else "writer-a"
            chosen = await _gen(session, job, topic, winner, chars(chosen_len, "c"))
            rejected = await _gen(session, job, topic, loser, chars(rejected_len, "r"))
            gens[job.id] += [chosen, rejected]
            await factories.judged_pair(session, chosen, rejected, 7.0, topic_title=topic.title)
    g = gens[job1.id]
    for a, b, winner in [
        (0, 1, "A"),
        (1, 0, "A"),
        (2, 3, "A"),
        (3, 2, "A"),
        (4, 5, "B"),
        (5, 4, "B"),
        (0, 2, "A"),
    ][:6]:
        await factories.judgment(session, g[a], g[b], winner)
    await factories.judgment(session, g[0], g[2], None, status="failed")
    g = gens[job2.id]
    await factories.judgment(session, g[0], g[1], "A")
    await factories.judgment(session, g[1], g[0], "B")
    await session.commit()
    return job1, job2


async def test_bias_figures_are_exact(api: httpx.AsyncClient, session: AsyncSession) -> None:
    job1, job2 = await bias_world(session)
    resp = await api.get("/pairs/stats")
    assert resp.status_code == 200, resp.text
    bias = resp.json()["bias"]
    assert bias["length"] == {
        "chosen_longer": 2,
        "chosen_shorter": 2,
        "equal_length": 1,
        "chosen_longer_share": 0.5,
    }
    assert bias["position"] == {"a_wins": 5, "b_wins": 3, "a_win_share": 0.625}
    one, two = bias["per_job"]
    assert (one["job_id"], one["pairs"], two["job_id"], two["pairs"]) == (job1.id, 3, job2.id, 2)
    assert one["length"]["chosen_longer_share"] == pytest.approx(2 / 3)
    assert one["position"] == {"a_wins": 4, "b_wins": 2, "a_win_share": pytest.approx(4 / 6)}
    assert [(m["model"], m["wins"], m["losses"]) for m in one["models"]] == [
        ("writer-a", 2, 1),
        ("writer-b", 1, 2),
    ]
    assert two["length"] == {
        "chosen_longer": 0,
        "chosen_shorter": 1,
        "equal_length": 1,
        "chosen_longer_share": 0.0,
    }
    assert two["position"]["a_win_share"] == 0.5
    assert [(m["model"], m["win_rate"]) for m in two["models"]] == [
        ("writer-a", 0.5),
        ("writer-b", 0.5),
    ]
    only_two = (await api.get("/pairs/stats", params={"job_id": job2.id})).json()["bias"]
    assert only_two["per_job"] == [two]
    assert only_two["position"] == two["position"]


def _card_header(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert isinstance(header, dict)
    return header


async def test_card_numbers_are_the_databases(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    job1, job2 = await bias_world(session)
    for params in ({}, {"job_id": job1.id}, {"min_confidence": 8}):
        stats = (await api.get("/pairs/stats", params=params)).json()
        resp = await api.get("/pairs/card", params=params)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/markdown")
        card = resp.text
        header = _card_header(card)
        # The card repeats the pair statistics; the human-label summary is the review page's.
        stats.pop("human_labels")
        assert header["chatpgt"]["stats"] == stats
        assert header["license"] == "unknown"
        assert header["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
        names = [f["name"] for f in header["dataset_info"]["features"]]
        assert names[:3] == ["prompt", "chosen", "rejected"]
        assert header["dataset_info"]["splits"][0]["num_examples"] == stats["counts"]["total"]
        counts = stats["counts"]
        assert f"| {counts['total']} | {counts['judged']} | {counts['corpus']} |" in card
        for bucket in stats["confidence_histogram"]:
            assert f"| {bucket['bucket']} | {bucket['count']} |" in card
        assert f"order flips: {stats['judge']['flips']}" in card
        expected_jobs = sorted({j["job_id"] for j in stats["bias"]["per_job"]})
        assert header["chatpgt"]["job_ids"] == expected_jobs
        assert f"Total: ${stats['cost']['total_cost_usd']:.4f}." in card
        assert "## Prompts" in card


def _dpo_step(model_dir: Path, dataset: Any, out: Path) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = DPOConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=2,
        max_length=512,
        precompute_ref_log_probs=True,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    return float(result.training_loss)


def _partials(folder: Path) -> list[str]:
    """Hidden (partial) files and directories an export left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def cli(api_url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "chatpgt.cli", "--api", api_url, "pairs", *args],
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


async def test_parquet_and_hf_folder_load_and_train(
    api: httpx.AsyncClient,
    api_url: str,
    service_env: dict[str, str],
    session: AsyncSession,
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    import datasets

    job1, _ = await bias_world(session)
    jsonl = await api.get("/pairs/export", params={"format": "jsonl"})
    want = [json.loads(line) for line in jsonl.text.splitlines()]
    assert len(want) == 5

    resp = await api.get("/pairs/export", params={"format": "parquet"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.apache.parquet"
    parquet = tmp_path / "pairs.parquet"
    parquet.write_bytes(resp.content)
    from_parquet = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    assert from_parquet.to_list() == want

    env = {**service_env, "HF_HUB_OFFLINE": "1"}
    hf_dir = tmp_path / "hf"
    done = cli(api_url, env, "export", "--format", "hf", "--out", str(hf_dir))
    assert done.returncode == 0, done.stderr
    assert "wrote 5 pairs" in done.stdout
    from_disk = datasets.load_from_disk(str(hf_dir))
    assert from_disk.to_list() == want
    card = (hf_dir / "README.md").read_text()
    assert _card_header(card)["configs"][0]["data_files"][0]["path"] == "data-*.arrow"

    hub_dir = tmp_path / "hub-layout"
    done = cli(api_url, env, "export", "--format", "parquet", "--out", str(hub_dir))
    assert done.returncode == 0, done.stderr
    # the Hub layout loads by its card's configs alone
    from_card = datasets.load_dataset(str(hub_dir), split="train")
    assert from_card.to_list() == want
    # a path with the format's suffix is one file (no card)
    one_file = tmp_path / "cli.parquet"
    done = cli(api_url, env, "export", "--format", "parquet", "--out", str(one_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote 5 pairs") and one_file.is_file()
    from_file = datasets.load_dataset("parquet", data_files=str(one_file), split="train")
    assert from_file.to_list() == want
    assert _partials(tmp_path) == []

    for name, ds in (("parquet", from_parquet), ("hf", from_disk)):
        loss = _dpo_step(tiny_model_dir, ds, tmp_path / f"dpo-{name}")
        assert loss == loss  # a number, not NaN


async def _length_skewed(session: AsyncSession, n: int, longer: int) -> DatagenJob:
    job = await factories.job(session)
    topic = await factories.topic(session, "Skewed lengths")
    rng = random.Random(5)
    for i in range(n):
        a, b = rng.randint(50, 400), rng.randint(50, 400)
        short, long_ = sorted((a, b + 401))  # never equal
        chosen_len, rejected_len = (long_, short) if i < longer else (short, long_)
        chosen = await _gen(session, job, topic, "writer-a", chars(chosen_len, "c"), 2 * i)
        rejected = await _gen(session, job, topic, "writer-b", chars(rejected_len, "r"), 2 * i + 1)
        await factories.judged_pair(session, chosen, rejected, 5 + i % 5, topic_title=topic.title)
    await session.commit()
    return job


async def test_balanced_export_has_chosen_longer_in_half(
    api: httpx.AsyncClient,
    api_url: str,
    service_env: dict[str, str],
    session: AsyncSession,
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    await _length_skewed(session, 200, longer=160)
    stats = (await api.get("/pairs/stats")).json()
    assert stats["bias"]["length"]["chosen_longer_share"] == 0.8
    resp = await api.get("/pairs/export", params={"balance_length": "true"})
    rows = [json.loads(line) for line in resp.text.splitlines()]
    longer = sum(len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) for r in rows)
    share = longer / len(rows)
    assert abs(share - 0.5) <= 0.05, share
    assert len(rows) == 80  # all 40 shorter ones, 40 of the 160 longer ones
    # Parquet balances the same pairs
    resp = await api.get("/pairs/export", params={"balance_length": "true", "format": "parquet"})
    path = tmp_path / "b.parquet"
    path.write_bytes(resp.content)
    assert pq.read_table(path).column("id").to_pylist() == [r["id"] for r in rows]
    card = (await api.get("/pairs/card", params={"balance_length": "true"})).text
    header = _card_header(card)
    assert header["chatpgt"]["length_balancing"] == {
        "pairs_before": 200,
        "dropped": 120,
        "pairs_after": 80,
    }
    assert header["dataset_info"]["splits"][0]["num_examples"] == 80
    # `pairs export --balance-length`: a directory with the same rows and the same card
    folder = tmp_path / "balanced"
    done = cli(api_url, service_env, "export", "-f", "jsonl", "-o", str(folder), "--balance-length")
    assert done.returncode == 0, done.stderr
    data = folder / "data" / "train-00000-of-00001.jsonl"
    assert [json.loads(line)["id"] for line in data.read_text().splitlines()] == [
        r["id"] for r in rows
    ]
    card_rows = _card_header((folder / "README.md").read_text())["dataset_info"]["splits"][0]
    assert card_rows["num_examples"] == 80


def _mutate(text: str, share: float, seed: int) -> str:
    tokens = text.split()
    rng = random.Random(seed)
    for i in rng.sample(range(len(tokens)), round(share * len(tokens))):
        tokens[i] = f"changed{i}"
    return " ".join(tokens)


async def wait_scan(api: httpx.AsyncClient, scan_id: int, within_s: float = 90.0) -> dict[str, Any]:
    """GET /pairs/dedup/{id} until the scan is terminal."""
    deadline = time.monotonic() + within_s
    while True:
        resp = await api.get(f"/pairs/dedup/{scan_id}")
        assert resp.status_code == 200, resp.text
        scan = resp.json()
        if scan["status"] in ("succeeded", "failed", "cancelled"):
            return scan
        assert time.monotonic() < deadline, f"scan {scan_id} still {scan['status']}: {scan}"
        await asyncio.sleep(0.1)


async def submit_scan(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = await api.post("/pairs/dedup", json=body)
    assert resp.status_code == 202, resp.text
    scan = resp.json()
    assert resp.headers["location"] == f"/pairs/dedup/{scan['id']}"
    return scan


async def test_planted_near_duplicate_is_flagged_and_excluded(
    api: httpx.AsyncClient,
    api_url: str,
    service_env: dict[str, str],
    session: AsyncSession,
    tmp_path: Path,
    datagen_worker: procs.Proc,
) -> None:
    real = words(800, seed=1)
    corpus_topic = await factories.topic(
        session, "The real one", source="corpus", reference_text=real
    )
    job = await factories.job(session)
    copy = await _gen(session, job, corpus_topic, "writer-a", _mutate(real, 0.03, 2))
    own = await _gen(session, job, corpus_topic, "writer-b", words(700, seed=3))
    other = await _gen(session, job, corpus_topic, "writer-c", words(750, seed=4))
    topic2 = await factories.topic(session, "Second topic")
    first = await _gen(session, job, topic2, "writer-a", words(600, seed=5))
    echo = await _gen(session, job, topic2, "writer-b", _mutate(first.text or "", 0.03, 6))
    title = corpus_topic.title
    await factories.judged_pair(session, copy, own, 8.0, topic_title=title)
    keep = await factories.judged_pair(session, own, other, 8.0, topic_title=title)
    await factories.corpus_pair(session, corpus_topic, copy)
    await factories.judged_pair(session, echo, first, 8.0, topic_title=topic2.title)
    await session.commit()

    # POST /pairs/dedup queues the scan (202, Location); a datagen worker runs it
    queued = await submit_scan(api, {"job_ids": [job.id]})
    assert queued["status"] in ("queued", "running")
    assert queued["job_ids"] == [job.id] and queued["threshold"] == 0.7
    assert queued["result"] is None and queued["error"] is None
    scan = await wait_scan(api, queued["id"])
    assert scan["status"] == "succeeded", scan
    assert scan["attempts"] == 1 and scan["started_at"] and scan["finished_at"]
    assert scan["progress"] == {"essays": 5, "total": 5, "corpus_essays": 1}
    result = scan["result"]
    assert result["job_ids"] == [job.id] and result["threshold"] == 0.7
    assert result["essays"] == 5 and result["corpus_essays"] == 1
    assert result["flagged"] == {"essay": 1, "corpus": 1}
    flags = {f.generation_id: f for f in (await session.execute(select(NearDuplicate))).scalars()}
    assert set(flags) == {copy.id, echo.id}
    assert flags[copy.id].kind == "corpus" and flags[copy.id].similar_topic_id == corpus_topic.id
    assert flags[echo.id].kind == "essay" and flags[echo.id].similar_generation_id == first.id
    for flag in flags.values():
        assert 0.7 <= flag.similarity < 1.0
    page = (await api.get("/pairs/dedup")).json()
    assert [s["id"] for s in page["items"]] == [scan["id"]] and page["next_cursor"] is None

    export = await api.get("/pairs/export", params={"dedup_threshold": 0.7})
    ids = [json.loads(line)["id"] for line in export.text.splitlines()]
    assert ids == [keep.id]
    everything = await api.get("/pairs/export")
    assert len(everything.text.splitlines()) == 4
    stats = (await api.get("/pairs/stats", params={"dedup_threshold": 0.7})).json()
    assert stats["counts"]["total"] == 1
    assert stats["dedup"] == {
        "flagged_essays": {"essay": 1, "corpus": 1},
        "threshold": 0.7,
        "pairs_excluded": 3,
    }
    # a threshold above both similarities keeps everything
    high = (await api.get("/pairs/stats", params={"dedup_threshold": 1.0})).json()
    assert high["counts"]["total"] == 4
    # the CLI: `pairs export --dedup-threshold` is the API's export; `pairs dedup` rescans,
    # following the queued scan to its counts
    out = tmp_path / "deduped.jsonl"
    done = cli(api_url, service_env, "export", "--out", str(out), "--dedup-threshold", "0.7")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == export.content and done.stdout.startswith("wrote 1 pair ")
    done = cli(api_url, service_env, "dedup", "--job", str(job.id), "--threshold", "0.7")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.split()
        == (
            "scanned 5 essays against 1 corpus essay at 0.7: "
            "1 near-copies of another essay, 1 of a corpus essay"
        ).split()
    )
    assert "submitted dedup scan" in done.stderr
    assert len((await session.execute(select(NearDuplicate))).all()) == 2
    # --no-wait prints the queued scan and returns; dedup-status --follow --json its end
    done = cli(api_url, service_env, "dedup", "--job", str(job.id), "--no-wait")
    assert done.returncode == 0, done.stderr
    [word, noun, scan_id, status] = done.stdout.split()
    assert (word, noun, status) == ("dedup", "scan", "queued")
    done = cli(api_url, service_env, "dedup-status", scan_id, "--follow", "--json")
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["id"] == int(scan_id) and final["status"] == "succeeded"
    assert final["result"]["flagged"] == {"essay": 1, "corpus": 1}
    done = cli(api_url, service_env, "dedup", "--job", str(job.id), "--threshold", "1.5")
    assert done.returncode == 2 and "threshold" in done.stderr, done.stderr
    # rescanning replaces the flags instead of adding to them
    for threshold in (0.95, 1.0):  # 1.0: only exact copies (the LSH bands stop at 0.95)
        again = await submit_scan(api, {"job_ids": [job.id], "threshold": threshold})
        done_scan = await wait_scan(api, again["id"])
        assert done_scan["status"] == "succeeded", done_scan
        assert done_scan["result"]["flagged"] == {"essay": 0, "corpus": 0}
    assert (await session.execute(select(NearDuplicate))).first() is None
    # newest first, a keyset page at a time
    first_page = (await api.get("/pairs/dedup", params={"limit": 2})).json()
    assert [s["threshold"] for s in first_page["items"]] == [1.0, 0.95]
    rest = (await api.get("/pairs/dedup", params={"cursor": first_page["next_cursor"]})).json()
    assert len(rest["items"]) == 3 and rest["next_cursor"] is None
    assert max(s["id"] for s in rest["items"]) < min(s["id"] for s in first_page["items"])
    succeeded = (await api.get("/pairs/dedup", params={"status": "succeeded"})).json()
    assert len(succeeded["items"]) == 5
    # a finished scan cannot be cancelled
    _problem(await api.post(f"/pairs/dedup/{scan['id']}/cancel"), 409)


async def _scan_row(session: AsyncSession, **values: Any) -> DedupScan:
    defaults: dict[str, Any] = {
        "status": "queued",
        "job_ids": [],
        "threshold": 0.7,
        "progress": {},
        "cancel_requested": False,
        "attempts": 0,
    }
    row = DedupScan(**{**defaults, **values})
    session.add(row)
    await session.commit()
    return row


async def test_a_scan_whose_worker_died_is_swept_and_scanned_again(
    api: httpx.AsyncClient,
    session: AsyncSession,
    service_env: dict[str, str],
    datagen_worker: procs.Proc,
) -> None:
    """A running scan whose lease ran out (its worker died): the orphan sweep re-enqueues it
    and the live worker scans it from the start (its stale progress is replaced)."""
    from workers.app import make_celery

    real = words(400, seed=21)
    topic = await factories.topic(session, "Swept", source="corpus", reference_text=real)
    job = await factories.job(session)
    copy = await _gen(session, job, topic, "writer-a", _mutate(real, 0.03, 22))
    await _gen(session, job, topic, "writer-b", words(400, seed=23))
    await session.commit()
    dead = await _scan_row(
        session,
        status="running",
        job_ids=[job.id],
        attempts=1,
        lease_owner="dead-host:1:0",
        lease_expires_at=utcnow() - timedelta(seconds=1),
        started_at=utcnow() - timedelta(minutes=1),
        progress={"essays": 1, "total": 2, "corpus_essays": 1},
    )
    celery = make_celery()
    try:
        celery.send_task(DATAGEN_SWEEP)
    finally:
        celery.close()
    scan = await wait_scan(api, dead.id)
    assert scan["status"] == "succeeded" and scan["attempts"] == 2, scan
    assert scan["progress"] == {"essays": 2, "total": 2, "corpus_essays": 1}
    assert scan["result"]["flagged"] == {"essay": 0, "corpus": 1}
    flags = (await session.execute(select(NearDuplicate))).scalars().all()
    assert [f.generation_id for f in flags] == [copy.id]
    assert "re-enqueuing it" in datagen_worker.log()


async def test_scan_claims_busy_cancel_and_give_up(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    service_env: dict[str, str],
) -> None:
    """The runner in this process: a live lease is left alone, a cancel before or during the
    scan ends it cancelled with the flags untouched, a scan that killed its worker
    MAX_ATTEMPTS times fails."""
    from chatpgt.datasets import scan_runner
    from chatpgt.settings import Settings

    settings = Settings(
        database_url=service_env["CHATPGT_DATABASE_URL"], job_lease_s=30, job_heartbeat_s=0.05
    )

    def runner(scan: DedupScan) -> scan_runner.ScanRunner:
        return scan_runner.ScanRunner(scan.id, sessionmaker, settings)

    held = await _scan_row(
        session,
        status="running",
        lease_owner="alive:1:0",
        lease_expires_at=utcnow() + timedelta(seconds=30),
    )
    assert await runner(held).run() == "busy"
    tired = await _scan_row(
        session,
        status="running",
        attempts=scan_runner.MAX_ATTEMPTS,
        lease_owner="dead:1:0",
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )
    assert await runner(tired).run() == "failed"
    await session.refresh(tired)
    assert tired.status == "failed" and tired.lease_owner is None
    assert tired.error == "gave up after 3 attempts: the worker stopped during each one"
    asked = await _scan_row(
        session,
        status="running",
        cancel_requested=True,
        lease_owner="dead:1:0",
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )
    assert await runner(asked).run() == "cancelled"
    assert await runner(asked).run() == "cancelled"  # a redelivery: already terminal

    # a cancel while the scan runs: the heartbeat sees it, the scan's transaction is dropped
    job = await factories.job(session)
    topic = await factories.topic(session, "Kept flags")
    gen = await _gen(session, job, topic, "writer-a", words(50, seed=31))
    session.add(
        NearDuplicate(
            job_id=job.id,
            generation_id=gen.id,
            kind="essay",
            similar_generation_id=None,
            similar_topic_id=None,
            similarity=0.9,
            scanned_at=utcnow(),
        )
    )
    await session.commit()
    running = await _scan_row(session, job_ids=[job.id])
    run = runner(running)
    started = asyncio.Event()

    async def slow_scan(s: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        await s.execute(delete(NearDuplicate))  # inside the scan's transaction
        started.set()
        await asyncio.sleep(30)

    original = scan_runner.dedup.scan
    scan_runner.dedup.scan = slow_scan  # type: ignore[assignment]
    try:
        task = asyncio.create_task(run.run())
        await asyncio.wait_for(started.wait(), 10)
        cancelled = await api_cancel(sessionmaker, running.id)
        assert cancelled == "running"  # flagged; the worker stops it
        assert await asyncio.wait_for(task, 10) == "cancelled"
    finally:
        scan_runner.dedup.scan = original  # type: ignore[assignment]
    await session.refresh(running)
    assert running.status == "cancelled" and running.result is None
    assert len((await session.execute(select(NearDuplicate))).all()) == 1


async def api_cancel(sessionmaker: async_sessionmaker[AsyncSession], scan_id: int) -> str:
    """``POST /pairs/dedup/{id}/cancel``'s service call; the scan's status it answers."""
    from chatpgt.datasets import scans

    async with sessionmaker() as s:
        out = await scans.cancel_scan(s, scan_id)
        await s.commit()
    return out.status


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert isinstance(body, dict)
    return body


async def test_bad_input_is_a_problem_and_writes_nothing(
    api: httpx.AsyncClient,
    api_url: str,
    service_env: dict[str, str],
    session: AsyncSession,
    tmp_path: Path,
) -> None:
    await bias_world(session)
    _problem(await api.get("/pairs/export", params={"format": "xml"}), 422)
    for bad in ("0", "-0.5", "1.01", "nan"):
        for path in ("/pairs/export", "/pairs/stats", "/pairs/card"):
            _problem(await api.get(path, params={"dedup_threshold": bad}), 422)
    for bad_body in (
        {"threshold": 0},
        {"threshold": 1.5},
        {"threshold": "nan"},
        {"job_ids": [0]},
        {"job_ids": "1"},
        {"bogus": 1},
    ):
        _problem(await api.post("/pairs/dedup", json=bad_body), 422)
    assert (await session.execute(select(NearDuplicate))).first() is None
    assert (await session.execute(select(DedupScan))).first() is None
    for path in ("/pairs/dedup/999999", "/pairs/dedup/999999/cancel"):
        call = api.get if not path.endswith("cancel") else api.post
        body = _problem(await call(path), 404)
        assert body["detail"] == "Dedup scan 999999 does not exist."
    _problem(await api.get("/pairs/dedup", params={"cursor": "nonsense"}), 400)
    _problem(await api.get("/pairs/dedup", params={"status": "paused"}), 422)
    _problem(await api.get("/pairs/card", params={"layout": "zip"}), 422)

    # --push-to-hub without a token: a clear error before anything is exported or written
    env = {k: v for k, v in service_env.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    out = tmp_path / "pushed"
    done = cli(
        api_url, env, "export", "-f", "hf", "--out", str(out), "--push-to-hub", "someone/pairs"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "No Hugging Face token" in done.stderr
    done = cli(api_url, env, "export", "-f", "csv", "-o", str(out), "--push-to-hub", "a/b")
    assert done.returncode == 2 and "uploads Parquet" in done.stderr, done.stderr
    assert not out.exists()
    assert _partials(tmp_path) == []
    # an API error (bad threshold) mid-way leaves no partial directory either
    done = cli(api_url, env, "export", "--out", str(out), "--dedup-threshold", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "dedup_threshold" in done.stderr
    assert not out.exists()
    assert _partials(tmp_path) == []
    # a non-empty target is refused
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    done = cli(api_url, env, "export", "--out", str(tmp_path / "full"))
    assert done.returncode == 2 and "not an empty directory" in done.stderr
    assert os.listdir(tmp_path / "full") == ["x"]


def _preference_rows() -> list[dict[str, Any]]:
    system = {"role": "system", "content": "Be brief."}
    return [
        {
            "prompt": [system, {"role": "user", "content": f"Write about tides {i}."}],
            "chosen": [{"role": "assistant", "content": f'Tides, kept {i}, "quoted".'}],
            "rejected": [{"role": "assistant", "content": f"Dropped essay {i}."}],
            "confidence": 6.0 + i,
        }
        for i in range(3)
    ]


async def test_import_preference_dataset_as_a_job(
    api: httpx.AsyncClient,
    api_url: str,
    service_env: dict[str, str],
    session: AsyncSession,
    tmp_path: Path,
) -> None:
    import datasets

    rows = _preference_rows()
    folder = tmp_path / "prefs"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    plain = tmp_path / "plain.parquet"
    datasets.Dataset.from_list(
        [{"prompt": "Say hi.", "chosen": "Hi.", "rejected": "Go away.", "topic": "Greetings"}]
    ).to_parquet(str(plain))

    resp = await api.post("/pairs/import", json={"dataset": str(folder)})
    assert resp.status_code == 201, resp.text
    result = resp.json()
    assert (result["pairs"], result["topics"], result["topics_created"]) == (3, 3, 3)
    export = await api.get("/pairs/export", params={"job_id": result["job_id"]})
    got = [json.loads(line) for line in export.text.splitlines()]
    assert [{k: r[k] for k in ("prompt", "chosen", "rejected", "confidence")} for r in got] == rows
    job = (await api.get(f"/datagen/jobs/{result['job_id']}")).json()
    assert job["status"] == "succeeded" and job["request"]["import"]["rows"] == 3

    resp = await api.post("/pairs/import", json={"dataset": str(plain), "confidence": 7})
    assert resp.status_code == 201, resp.text
    second = resp.json()
    stats = (await api.get("/pairs/stats", params={"job_id": second["job_id"]})).json()
    assert stats["counts"] == {"total": 1, "judged": 0, "corpus": 0, "imported": 1}
    page = (await api.get("/pairs", params={"job_id": second["job_id"]})).json()
    (item,) = page["items"]
    assert (item["topic"], item["confidence"], item["source"]) == ("Greetings", 7.0, "imported")
    assert item["prompt_messages"] == [{"role": "user", "content": "Say hi."}]
    card = (await api.get("/pairs/card", params={"job_id": second["job_id"]})).text
    assert f"1 pairs imported from `{plain}` (split train)" in card

    # the CLI: `pairs import` through the API client
    done = cli(api_url, service_env, "import", str(plain), "--confidence", "6", "--json")
    assert done.returncode == 0, done.stderr
    third = json.loads(done.stdout)
    assert (third["pairs"], third["topics"], third["topics_created"]) == (1, 1, 0)
    third_stats = (await api.get("/pairs/stats", params={"job_id": third["job_id"]})).json()
    assert third_stats["counts"]["imported"] == 1
    done = cli(api_url, service_env, "import", str(plain), "--confidence", "0")
    assert done.returncode == 2 and "confidence" in done.stderr, done.stderr

    # bad input: nothing is written
    before = (await api.get("/pairs/stats")).json()["counts"]
    no_rejected = tmp_path / "bad.parquet"
    datasets.Dataset.from_list([{"prompt": "x", "chosen": "y"}]).to_parquet(str(no_rejected))
    body = _problem(await api.post("/pairs/import", json={"dataset": str(no_rejected)}), 400)
    assert "rejected" in body["detail"]
    multi = tmp_path / "multi.jsonl"
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    multi.write_text(
        json.dumps({"prompt": "ok", "chosen": "c", "rejected": "r"})
        + "\n"
        + json.dumps({"prompt": turns, "chosen": "c", "rejected": "r"})
        + "\n"
    )
    body = _problem(await api.post("/pairs/import", json={"dataset": str(multi)}), 400)
    assert body["detail"].startswith("row 1: prompt")
    _problem(await api.post("/pairs/import", json={"dataset": str(tmp_path / "missing")}), 400)
    _problem(await api.post("/pairs/import", json={"dataset": str(folder), "confidence": 0}), 422)
    assert (await api.get("/pairs/stats")).json()["counts"] == before


def test_job_dedup_step_flags_copies_within_a_topic_and_of_its_corpus_essay() -> None:
    """The job's dedup option (chatpgt.datagen.dedup_step), on one topic's essays: the later of
    two near-copies is flagged, a copy of the corpus essay only with ``against_corpus``."""
    from chatpgt.datagen.dedup_step import near_duplicate_flags
    from chatpgt.datagen.models import Generation
    from chatpgt.datagen.planner import TopicState
    from chatpgt.datagen.schemas import JobDedup

    real = words(800, seed=11)
    first = words(700, seed=12)
    texts = {
        5: _mutate(first, 0.03, 1),  # the later copy of essay 3
        3: first,
        4: _mutate(real, 0.03, 2),  # the corpus essay, lightly edited
        6: words(650, seed=13),
    }
    essays = [Generation(id=i, text=t) for i, t in texts.items()]
    topic = TopicState(9, "A topic", "Write.", real, "generating")
    flags = near_duplicate_flags(1, JobDedup(threshold=0.7), topic, essays)
    got = {
        f["generation_id"]: (f["kind"], f["similar_generation_id"], f["similar_topic_id"])
        for f in flags
    }
    assert got == {4: ("corpus", None, 9), 5: ("essay", 3, None)}
    assert all(0.7 <= f["similarity"] < 1 and f["job_id"] == 1 for f in flags)
    alone = near_duplicate_flags(1, JobDedup(threshold=0.7, against_corpus=False), topic, essays)
    assert [f["generation_id"] for f in alone] == [5]
    strict = near_duplicate_flags(1, JobDedup(threshold=1.0), topic, essays)
    assert strict == []


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! It's a dog’s life: naïve café_au lait, 42x.",
        "ÉCOLE d'été — déjà vu!! 日本語のテキスト 🙂 ok",
        "",
        "one",
        "  spaced   out\n\nwords\t",
    ],
)
def test_vectorised_hashing_matches_regex_words_and_datasketch(text: str) -> None:
    """The numpy word hashes split words exactly as ``\\w+`` does (a word hashes the same
    wherever it stands), and the signature is datasketch's ``MinHash.update_batch`` result."""
    import re

    import numpy as np
    from datasketch import MinHash

    from chatpgt.pairs import near_duplicates as nd

    found = re.findall(r"\w+", text.lower())
    assert np.array_equal(nd.word_hashes(text), nd.word_hashes(" ".join(found)))
    assert len(nd.word_hashes(text)) == len(found)
    shingles = nd.shingle_hashes(text * 3)
    reference = MinHash(num_perm=nd.NUM_PERM, seed=1, scheme="affine32", hashfunc=lambda h: h)
    reference.update_batch(shingles.tolist())
    assert np.array_equal(nd.signature(text * 3), np.asarray(reference.hashvalues))


def test_distinct_words_hash_apart_and_case_does_not_matter() -> None:
    from chatpgt.pairs.near_duplicates import word_hashes

    hashes = word_hashes("Dog cat DOG dogs god")
    assert hashes[0] == hashes[2]
    assert len({int(h) for h in hashes}) == 4
    # short words too (a hash without a final mix kept only their last letter in its top bits)
    short = "a i s t an in on at it is as be by he we me no so to do go of or 1 2 10 20"
    assert len({int(h) for h in word_hashes(short)}) == len(short.split())
    # and all 17,576 three-letter words apart (32-bit hashes: a collision here is ~4% likely
    # for a good hash; these fixed words have none)
    letters = "abcdefghijklmnopqrstuvwxyz"
    trigrams = [a + b + c for a in letters for b in letters for c in letters]
    assert len({int(h) for h in word_hashes(" ".join(trigrams))}) == len(trigrams)
