"""The embedded database: the whole schema and every repository on a SQLite file.

The module migrates a fresh SQLite file with Alembic and drives the real services and
repositories (and, at the end, the API under uvicorn) against it. Expected values are computed
in the test from the rows written, with the same helpers the Postgres tests use, so a figure that
differs between the two databases fails here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository as datagen_repo
from chatpgt.datagen import service as datagen_service
from chatpgt.datagen.runner import JobRunner
from chatpgt.datagen.schemas import DatagenJobCreate
from chatpgt.datasets.export import iter_export, write_jsonl
from chatpgt.db.session import make_engine, make_sessionmaker, transaction
from chatpgt.errors import InvalidInput
from chatpgt.models import Base
from chatpgt.pairs import service as pairs_service
from chatpgt.pairs.formats import SEED_CSV_COLUMNS
from chatpgt.pairs.models import Pair
from chatpgt.pairs.repository import PairFilters
from chatpgt.pairs.schemas import PairStats
from chatpgt.pairs.stats import pair_stats
from chatpgt.paths import DataRoots
from chatpgt.providers.client import ProviderPool
from chatpgt.settings import Settings
from chatpgt.topics import repository as topics_repo
from chatpgt.topics import service as topics_service
from chatpgt.topics.schemas import FileImport
from chatpgt.training import repository as training_repo
from chatpgt.training.execution import make_sync_engine, sync_database_url
from chatpgt.training.models import RegisteredModel
from chatpgt.training.repository import RunStore
from tests import procs
from tests.conftest import alembic_config
from tests.test_pairs_api import (
    _expected_stats,
    _matches,
    _params,
    assert_stats_match,
    build_world,
)


def _migrated(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh SQLite file for this module, migrated to head by Alembic."""
    return _migrated(tmp_path_factory.mktemp("sqlite") / "chatpgt.db")


@pytest.fixture(scope="module")
async def lite(sqlite_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(sqlite_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def db(lite: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session on the emptied SQLite database."""
    async with lite() as session:
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(table.delete())
        await session.commit()
        yield session


# --- schema ---------------------------------------------------------------------------------


def test_models_and_migrations_agree_on_sqlite(sqlite_url: str) -> None:
    engine = create_engine(sync_database_url(sqlite_url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
        pair_indexes = {
            row.name: row.sql
            for row in conn.execute(
                text("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'pairs'")
            )
        }
    engine.dispose()
    assert diff == []
    # The partial unique indexes are partial on SQLite too (a judged and a corpus pair may share
    # a rejected generation).
    assert "WHERE source = 'judged'" in pair_indexes["uq_pairs_judged"]
    assert "WHERE source = 'corpus'" in pair_indexes["uq_pairs_corpus"]
    assert "GENERATED ALWAYS AS (length(chosen))" in pair_indexes["pairs"]


def test_downgrade_to_base_and_upgrade_again_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "migrate.db"
    url = _migrated(path)
    cfg = alembic_config(url)

    def tables() -> set[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows}

    assert {t.name for t in Base.metadata.sorted_tables} <= tables()
    command.downgrade(cfg, "0002")
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_xinfo(pairs)")}
    assert "chosen_chars" not in columns
    command.downgrade(cfg, "base")
    assert tables() <= {"alembic_version"}
    command.upgrade(cfg, "head")
    assert {t.name for t in Base.metadata.sorted_tables} <= tables()


async def test_connections_use_wal_foreign_keys_and_a_busy_timeout(
    db: AsyncSession, sqlite_url: str
) -> None:
    assert (await db.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
    assert (await db.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    assert (await db.execute(text("PRAGMA busy_timeout"))).scalar_one() == 30000
    sync = make_sync_engine(Settings(database_url=sqlite_url))
    try:
        assert sync.url.drivername == "sqlite"
        with sync.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 30000
    finally:
        sync.dispose()
    # Foreign keys are enforced: a generation of a job that does not exist is refused.
    with pytest.raises(Exception, match="FOREIGN KEY"):
        await datagen_repo.insert_generations(
            db,
            [
                {
                    "job_id": 999,
                    "topic_id": 999,
                    "generator_key": "k",
                    "provider": "p",
                    "model": "m",
                    "params": {},
                    "sample_index": 0,
                    "prompt": "x",
                }
            ],
        )
    await db.rollback()


# --- topics ---------------------------------------------------------------------------------


async def test_topics_create_import_list_and_sample(db: AsyncSession, tmp_path: Path) -> None:
    created = await topics_service.create_topics(
        db, ["Tides", "  tides ", "Moons of Jupiter", "Salt"], max_titles=100
    )
    await db.commit()
    assert (created.created, created.existing) == (3, 0)
    again = await topics_service.create_topics(db, ["TIDES", "Coral"], max_titles=100)
    await db.commit()
    assert (again.created, again.existing) == (1, 1)
    assert again.topics[0].id == created.topics[0].id

    # A corpus import gives the existing "Salt" its essay and creates the rest.
    corpus = tmp_path / "corpus.csv"
    with corpus.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "text"])
        writer.writerow(["Salt", "An essay on salt, with a comma."])
        writer.writerow(["Ébène", "Un essai."])
        writer.writerow(["", "skipped"])
    imported = await topics_service.import_topics(
        db,
        FileImport(source="file", path=str(corpus), text_column="text"),
        roots=DataRoots.unrestricted(),
    )
    await db.commit()
    assert (imported.rows, imported.skipped, imported.created, imported.existing) == (3, 1, 1, 1)
    assert imported.reference_texts_added == 1

    page = await topics_service.list_topics(db, limit=2)
    assert [t.title for t in page.items] == ["Tides", "Moons of Jupiter"]
    assert page.next_cursor is not None
    rest = await topics_service.list_topics(db, limit=10, cursor=page.next_cursor)
    assert [t.title for t in rest.items] == ["Salt", "Coral", "Ébène"]
    assert rest.next_cursor is None
    salt = rest.items[0]
    assert (salt.source, salt.has_reference_text) == ("corpus", True)
    assert salt.created_at.tzinfo is not None
    assert abs(salt.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    found = await topics_service.list_topics(db, limit=10, q="MOONS")
    assert [t.title for t in found.items] == ["Moons of Jupiter"]
    assert [t.title for t in (await topics_service.list_topics(db, limit=10, q="%")).items] == []
    corpus_only = await topics_service.list_topics(db, limit=10, source="corpus")
    assert {t.title for t in corpus_only.items} == {"Salt", "Ébène"}

    ids = [t.id for t in page.items + rest.items]
    # A seeded sample is md5 order of "<seed>:<id>", as on Postgres.
    sample = await topics_service.sample_topic_ids(db, 3, seed=7, exclude=[ids[0]])
    expected = sorted(ids[1:], key=lambda i: (hashlib.md5(f"7:{i}".encode()).hexdigest(), i))
    assert sample == expected[:3]
    assert await topics_service.sample_topic_ids(db, 3, seed=7, exclude=[ids[0]]) == sample
    unseeded = await topics_service.sample_topic_ids(db, 5)
    assert sorted(unseeded) == sorted(ids)
    with pytest.raises(InvalidInput, match="only 4 are available"):
        await topics_service.sample_topic_ids(db, 5, exclude=[ids[0]])

    chosen = await topics_service.resolve_topics(db, ["Coral", "New one"], [ids[0]], 1, seed=1)
    assert chosen[0] == ids[3] and chosen[2] == ids[0] and len(set(chosen)) == 4
    with pytest.raises(InvalidInput, match="Unknown topic ids: 4242"):
        await topics_service.resolve_topics(db, ids=[ids[0], 4242])
    assert await topics_repo.existing_topic_ids(db, [*ids, 4242]) == set(ids)
    assert await topics_repo.count_topics(db, exclude=ids) == 1


# --- a datagen job --------------------------------------------------------------------------


async def test_a_datagen_job_runs_on_sqlite(
    db: AsyncSession,
    lite: async_sessionmaker[AsyncSession],
    sqlite_url: str,
    fake_provider: str,
    providers_config: list[dict[str, object]],
) -> None:
    settings = Settings(
        database_url=sqlite_url, providers=providers_config, job_lease_s=30, job_heartbeat_s=1
    )
    titles = [f"Embedded topic {i}" for i in range(6)]
    request = DatagenJobCreate.model_validate(
        {
            "topics": {"titles": titles},
            "generators": [
                {"provider": "fake", "model": "writer-a", "samples_per_topic": 2},
                {"provider": "fake", "model": "writer-b"},
            ],
            "judge": {"provider": "fake", "model": "judge"},
            "pairing": "all_pairs",
        }
    )
    async with transaction(lite) as s:
        job, _ = await datagen_service.create_job(s, settings, request, "sqlite-job")
    async with transaction(lite) as s:
        replay, created = await datagen_service.create_job(s, settings, request, "sqlite-job")
    assert not created and replay.id == job.id

    async with ProviderPool(settings.provider_configs()) as pool:
        status = await JobRunner(job.id, lite, pool, settings).run()
    assert status == "succeeded"

    async with transaction(lite) as s:
        view = await datagen_service.get_job_view(s, job.id)
        generations = await datagen_repo.load_generations(s, job.id)
        judgments = await datagen_repo.load_judgments(s, job.id)
        pairs = (await s.scalars(select(Pair).where(Pair.job_id == job.id))).all()
        row = await datagen_repo.get_job(s, job.id)
        claimed_again = await datagen_repo.claim(s, job.id, "another-worker", 30)
    assert view.status == "succeeded"
    assert len(generations) == 6 * 3 and all(g.status == "succeeded" for g in generations)
    # all_pairs: 3 matchups per topic, both orders
    assert len(judgments) == 6 * 3 * 2
    assert view.generations.total == 18 and view.judgments.total == 36
    assert view.pairs == len(pairs) > 0
    assert view.cost_usd == pytest.approx(
        float(sum((r.cost_usd for r in [*generations, *judgments]), Decimal(0)))
    )
    for pair in pairs:
        assert pair.chosen_chars == len(pair.chosen) and pair.rejected_chars == len(pair.rejected)
        assert len(pair.judgment_ids) == 2
    for stamp in (row.created_at, row.started_at, row.finished_at, generations[0].finished_at):
        assert stamp is not None and stamp.tzinfo is not None
    assert row.started_at <= row.finished_at  # type: ignore[operator]
    assert claimed_again == "succeeded"

    # Leases: a running job whose lease runs out in ~30 s is recoverable after that long.
    async with transaction(lite) as s:
        running = await datagen_repo.insert_job(
            s, request={}, request_hash="1" * 64, idempotency_key=None, budget_usd=None
        )
        assert running is not None
        assert await datagen_repo.claim(s, running, "w1", 30) == "claimed"
        assert await datagen_repo.claim(s, running, "w2", 30) == "busy"
        assert await datagen_repo.renew_lease(s, running, "w1", 30) == (True, False)
        await datagen_repo.request_cancel(s, running)
        assert await datagen_repo.renew_lease(s, running, "w1", 30) == (True, True)
        recoverable = dict(await datagen_repo.recoverable_jobs(s, queued_for_s=600))
    assert set(recoverable) == {running}
    assert 25 < recoverable[running] <= 30


async def test_a_dedup_scan_runs_on_sqlite(
    db: AsyncSession,
    lite: async_sessionmaker[AsyncSession],
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A near-duplicate scan on the embedded database: the progress of every batch and the
    heartbeat write from other connections while the scan reads, then the scan's own
    connection replaces the flags and finishes the row."""
    import random

    from chatpgt.datagen.models import Generation
    from chatpgt.datasets import scan_runner, scans
    from chatpgt.datasets.schemas import DedupRequest
    from chatpgt.pairs.models import NearDuplicate
    from tests import factories

    rng = random.Random(7)
    job = await factories.job(db)
    topic = await factories.topic(db, "Scanned on SQLite")
    texts = [" ".join(f"w{rng.randrange(5000)}" for _ in range(60)) for _ in range(650)]
    texts.append(texts[3])  # the one copy
    for i, text_ in enumerate(texts):
        await factories.generation(db, job, topic, "writer-a", text_, sample_index=i)
    await db.commit()
    async with transaction(lite) as s:
        scan = await scans.submit(s, DedupRequest(job_ids=[job.id], threshold=0.8))
    monkeypatch.setattr(scan_runner, "PROGRESS_EVERY_S", 0.0)
    settings = Settings(database_url=sqlite_url, job_lease_s=30, job_heartbeat_s=0.01)
    assert await scan_runner.ScanRunner(scan.id, lite, settings).run() == "succeeded"
    async with transaction(lite) as s:
        out = await scans.get_scan(s, scan.id)
        flags = (await s.scalars(select(NearDuplicate))).all()
    assert out.status == "succeeded" and out.progress.essays == out.progress.total == 651
    assert out.result is not None and out.result.flagged == {"essay": 1, "corpus": 0}
    copy = (await db.scalars(select(Generation.id).where(Generation.sample_index == 650))).one()
    assert [(f.generation_id, f.kind) for f in flags] == [(copy, "essay")]
    assert out.finished_at is not None and out.finished_at.tzinfo is not None


# --- pairs ----------------------------------------------------------------------------------

FILTERS = [
    lambda w: PairFilters(),
    lambda w: PairFilters(min_confidence=6),
    lambda w: PairFilters(job_ids=(w.jobs[1].id,)),
    lambda w: PairFilters(job_ids=(w.jobs[0].id, w.jobs[2].id), model="writer-a"),
    lambda w: PairFilters(source="corpus"),
    lambda w: PairFilters(job_ids=(w.jobs[2].id,)),  # no pairs at all
]


async def test_pair_pages_stats_and_export(db: AsyncSession, tmp_path: Path) -> None:
    world = await build_world(db)
    # Odd and even numbers of matching pairs, so both forms of the median are checked.
    parities = {len([p for p in world.pairs if _matches(p, f(world))]) % 2 for f in FILTERS}
    assert parities == {0, 1}
    for make_filters in FILTERS:
        filters = make_filters(world)
        assert_stats_match(await pair_stats(db, filters), _expected_stats(world, filters))

        want_ids = [p.id for p in world.pairs if _matches(p, filters)]
        got_ids: list[int] = []
        cursor = None
        while True:
            page = json.loads(
                await pairs_service.pairs_page_json(db, filters, limit=4, cursor=cursor)
            )
            got_ids += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert got_ids == want_ids
    await db.commit()

    pair = world.pairs[0]
    item = json.loads(await pairs_service.pair_json(db, pair.id))
    assert item["judgment_ids"] == pair.judgment_ids
    assert item["verdicts"] == pair.verdicts
    assert item["chosen"] == pair.chosen
    assert datetime.fromisoformat(item["created_at"]).utcoffset() == timedelta(0)

    written = await write_jsonl(db, PairFilters(), tmp_path / "pairs.jsonl")
    lines = (tmp_path / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    assert written == len(lines) == len(world.pairs)
    assert [json.loads(line)["chosen"][-1]["content"] for line in lines] == [
        p.chosen for p in world.pairs
    ]
    body = b"".join([chunk async for chunk in iter_export(db, PairFilters(), "csv")])
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert list(rows[0]) == list(SEED_CSV_COLUMNS)
    assert [r["rejected"] for r in rows] == [p.rejected for p in world.pairs]
    await db.commit()


# --- training -------------------------------------------------------------------------------


async def test_training_runs_claim_heartbeat_and_finish(db: AsyncSession, sqlite_url: str) -> None:
    sft = await training_repo.create_run(
        db,
        kind="sft",
        request={"epochs": 1},
        start_model={"ref": "tiny", "path": "/models/tiny"},
        output_name=None,
    )
    dpo = await training_repo.create_run(
        db, kind="dpo", request={}, start_model={"ref": "x"}, output_name="mine"
    )
    await db.commit()
    assert sft.output_name == f"sft-{sft.id}"

    engine = make_sync_engine(Settings(database_url=sqlite_url))
    store = RunStore(engine)
    try:
        assert store.claim(sft.id, "w1", lease_s=30, max_attempts=3)
        assert not store.claim(sft.id, "w2", lease_s=30, max_attempts=3)  # held by a live worker
        snap = store.snapshot(sft.id)
        assert snap is not None
        assert (snap.status, snap.lease_owner, snap.attempts, snap.lease_expired) == (
            "running",
            "w1",
            1,
            False,
        )
        assert store.heartbeat(sft.id, "w1", lease_s=30) is False
        assert store.heartbeat(sft.id, "w2", lease_s=30) is None

        # JSON columns merge key by key, as JSONB || does: a nested object is replaced whole.
        assert store.update(sft.id, "w1", progress={"step": 1, "nested": {"a": 1}}) is False
        assert (
            store.update(sft.id, "w1", progress={"total_steps": 9, "nested": {"b": None}}) is False
        )
        assert store.update(sft.id, "w1", progress={"eta_s": 1.5}) is False
        snap = store.snapshot(sft.id)
        assert snap is not None
        assert snap.progress == {"step": 1, "total_steps": 9, "nested": {"b": None}, "eta_s": 1.5}

        assert await training_repo.request_cancel(db, sft.id)
        await db.commit()
        assert store.heartbeat(sft.id, "w1", lease_s=30) is True

        register = {
            "name": "tiny-sft",
            "kind": "sft",
            "path": "/runs/1/model",
            "metrics": {"loss": 1.0},
            "parent_id": None,
            "base": {"name": "tiny", "path": "/models/tiny"},
        }
        assert not store.finish(sft.id, "w2", "succeeded", register=register)
        assert store.finish(sft.id, "w1", "succeeded", register=register)
        assert not store.finish(sft.id, "w1", "failed")  # terminal stays terminal

        # A run whose worker died (lease in the past) is taken over, and is re-enqueued at once
        # meanwhile; a live lease is re-checked when it would run out.
        assert store.claim(dpo.id, "w1", lease_s=-5, max_attempts=3)
        assert store.orphaned_runs(queued_for_s=600) == [(dpo.id, 0.0)]
        assert store.claim(dpo.id, "w2", lease_s=30, max_attempts=3)
        [(run_id, wait_s)] = store.orphaned_runs(queued_for_s=600)
        assert run_id == dpo.id and 25 < wait_s <= 30
        assert store.update(dpo.id, "w1", progress={"step": 2}) is None  # lost its lease
        assert store.finish(dpo.id, "w2", "failed", error="boom")
    finally:
        engine.dispose()

    run = await training_repo.get_run(db, sft.id)
    assert run is not None and run.status == "succeeded" and run.lease_owner is None
    for stamp in (run.created_at, run.started_at, run.finished_at, run.updated_at):
        assert stamp is not None and stamp.tzinfo is not None
    assert run.started_at <= run.finished_at  # type: ignore[operator]
    failed = await training_repo.get_run(db, dpo.id)  # re-read: populate_existing
    assert failed is not None and (failed.status, failed.attempts, failed.error) == (
        "failed",
        2,
        "boom",
    )
    model = await training_repo.get_model_by_run(db, sft.id)
    assert model is not None and model.name == "tiny-sft"
    assert await training_repo.lineages(db, [model.id]) == {
        model.id: [(model.parent_id, "tiny", "base"), (model.id, "tiny-sft", "sft")]
    }
    assert [m.name for m in await training_repo.list_models(db, limit=10)] == ["tiny", "tiny-sft"]
    assert [r.id for r in await training_repo.list_runs(db, limit=10)] == [dpo.id, sft.id]
    assert await training_repo.count_pairs(db, PairFilters()) == 0
    base = await db.scalar(select(RegisteredModel).where(RegisteredModel.name == "tiny"))
    assert base is not None and (base.kind, base.run_id, base.parent_id) == ("base", None, None)
    await db.commit()


# --- the API --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_api(sqlite_url: str, service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    env = {**service_env, "CHATPGT_DATABASE_URL": sqlite_url}
    proc, base = procs.start_api(env, log_dir)
    yield base
    proc.stop()


async def test_the_api_serves_topics_and_pairs_from_sqlite(
    db: AsyncSession, sqlite_api: str
) -> None:
    world = await build_world(db)
    async with httpx.AsyncClient(base_url=sqlite_api, timeout=30.0) as api:
        resp = await api.post("/topics", json={"titles": ["Through the API", "through the api"]})
        assert resp.status_code in (200, 201), resp.text
        assert resp.json()["created"] == 1
        resp = await api.get("/topics", params={"q": "through", "limit": 5})
        assert resp.status_code == 200, resp.text
        assert [t["title"] for t in resp.json()["items"]] == ["Through the API"]

        filters = PairFilters(min_confidence=6)
        resp = await api.get("/pairs", params=[*_params(filters), ("limit", 500)])
        assert resp.status_code == 200, resp.text
        assert [p["id"] for p in resp.json()["items"]] == [
            p.id for p in world.pairs if _matches(p, filters)
        ]

        for make_filters in FILTERS[:3]:
            filters = make_filters(world)
            resp = await api.get("/pairs/stats", params=_params(filters))
            assert resp.status_code == 200, resp.text
            stats = PairStats.model_validate(resp.json())
            assert_stats_match(stats, _expected_stats(world, filters))

        resp = await api.get("/pairs/export", params={"format": "jsonl"})
        assert resp.status_code == 200, resp.text
        lines = resp.text.splitlines()
        assert len(lines) == len(world.pairs)
        assert json.loads(lines[0])["rejected"][-1]["content"] == world.pairs[0].rejected
