"""Seed a dedicated benchmark database with N preference pairs of realistic size, fast.

Every row is written by server-side SQL (``INSERT ... SELECT ... FROM generate_series``) in chunks
of pairs: per pair, its two generations (the essays), the two judgments behind it (both orders,
agreeing) and the pair itself with both texts copied in, as the datagen runner writes them. Jobs
hold ``--pairs-per-job`` pairs each (default 10,000), one topic per pair within a job.

The texts come from a pool of ~1,500-word essays cut from ``../shared/data/paul_graham_essays.csv``
(paragraphs concatenated until 1,500 words; ~340 texts of ~8,600 characters), or from generated
words when the file is absent. A pair's chosen and rejected texts are two different pool entries.
The generation rows carry only the first 200 characters of their essay: the pairs carry the full
texts (serving and export read only the pair rows) and this keeps the database at half the size.

    python bench/seed_pairs.py --pairs 1000000          # reuses chatpgt_bench if it holds them
    python bench/seed_pairs.py --pairs 10000 --reseed   # drop and seed again

Only the database named by ``--db`` (default ``chatpgt_bench``; it must start with
``chatpgt_bench``) is ever created or dropped. Postgres: CHATPGT_BENCH_PG_ADMIN, default
postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatpgt.db.migrate import upgrade  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "paul_graham_essays.csv"
WORDS_PER_TEXT = 1500
WRITERS = ("gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b", "mistral-large")
JUDGE = "gpt-4o"


def admin_url() -> str:
    return os.environ.get("CHATPGT_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def db_urls(name: str) -> tuple[str, str]:
    """``(psycopg URL, asyncpg SQLAlchemy URL)`` of database ``name`` on the admin server."""
    base = admin_url().rsplit("/", 1)[0]
    return f"{base}/{name}", base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"


def essay_pool(words_per_text: int = WORDS_PER_TEXT) -> tuple[list[str], str]:
    """Texts of about ``words_per_text`` words, and where they came from."""
    if CORPUS.exists():
        csv.field_size_limit(1 << 30)
        with CORPUS.open(newline="", encoding="utf-8") as f:
            essays = [row["text"] for row in csv.DictReader(f)]
        texts: list[str] = []
        current: list[str] = []
        count = 0
        for essay in essays:
            for paragraph in essay.split("\n\n"):
                paragraph = paragraph.strip()
                if not paragraph:
                    continue
                current.append(paragraph)
                count += len(paragraph.split())
                if count >= words_per_text:
                    texts.append("\n\n".join(current))
                    current, count = [], 0
        return texts, f"{CORPUS.name} ({len(essays)} essays)"
    rng = random.Random(0)
    vocabulary = [
        "".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(rng.randint(2, 9)))
        for _ in range(5000)
    ]
    texts = []
    for _ in range(300):
        words = [rng.choice(vocabulary) for _ in range(words_per_text)]
        paragraphs = [" ".join(words[i : i + 120]).capitalize() + "." for i in range(0, 1500, 120)]
        texts.append("\n\n".join(paragraphs))
    return texts, "generated words (corpus file absent)"


def seeded_pairs(url: str) -> tuple[int, int] | None:
    """``(pairs, pairs per job)`` of a completed seed of this database, or None."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT pairs FROM bench_seed WHERE completed").fetchone()
            if row is None:
                return None
            per_job = conn.execute("SELECT count(*) FROM pairs WHERE job_id = 1").fetchone()
            return int(row[0]), int(per_job[0])  # type: ignore[index]
    except psycopg.Error:
        return None


def _exec(conn: psycopg.Connection, sql: str, params: dict[str, object] | None = None) -> None:
    conn.execute(sql, params)  # type: ignore[arg-type]


def seed(conn: psycopg.Connection, n: int, per_job: int, chunk: int, pool: list[str]) -> None:
    """Write ``n`` pairs and everything behind them into a migrated, empty database."""
    m = len(WRITERS)
    _exec(conn, "CREATE TABLE bench_seed (pairs bigint, completed boolean, seeded_at timestamptz)")
    _exec(conn, "INSERT INTO bench_seed VALUES (%(n)s, false, now())", {"n": n})
    _exec(conn, "CREATE TABLE bench_essay_pool (idx int PRIMARY KEY, body text NOT NULL)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO bench_essay_pool VALUES (%s, %s)", list(enumerate(pool)))
    _exec(conn, "CREATE TABLE bench_writers (idx int PRIMARY KEY, model text NOT NULL)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO bench_writers VALUES (%s, %s)", list(enumerate(WRITERS)))
    jobs = -(-n // per_job)
    topics = min(n, per_job)
    params = {"n": n, "per_job": per_job, "jobs": jobs, "topics": topics, "p": len(pool), "m": m}
    _exec(
        conn,
        """
        INSERT INTO datagen_jobs (id, status, request, request_hash, cancel_requested, errors,
                                  attempts, started_at, finished_at, updated_at)
        SELECT j, 'succeeded',
               jsonb_build_object('pairing', 'best_vs_worst', 'judge',
                                  jsonb_build_object('provider', 'openai', 'model', 'gpt-4o')),
               md5(j::text), false, '[]'::jsonb, 1, now(), now(), now()
        FROM generate_series(1, %(jobs)s::bigint) j
        """,
        params,
    )
    _exec(
        conn,
        """
        INSERT INTO topics (id, title, normalized_title, source)
        SELECT t, 'Bench topic ' || t || ': what makes an essay worth reading',
               'bench topic ' || t || ': what makes an essay worth reading', 'manual'
        FROM generate_series(1, %(topics)s::bigint) t
        """,
        params,
    )
    conn.commit()
    # Pair g (1-based): job (g-1)/per_job + 1, topic (g-1)%per_job + 1; generations 2g-1 (the
    # chosen essay) and 2g (the rejected one); judgments 2g-1 (chosen shown as A) and 2g (as B).
    # c1, c2: the two verdicts' confidences (4-10, agreeing within one point).
    rows = """
        FROM (
          SELECT g,
                 (g - 1) / %(per_job)s + 1 AS job_id,
                 (g - 1) %% %(per_job)s + 1 AS topic_id,
                 g %% %(m)s AS wc,
                 (g %% %(m)s + 1 + (g / %(m)s) %% (%(m)s - 1)) %% %(m)s AS wr,
                 4 + (g * 7919) %% 7 AS c1,
                 least(10, greatest(4, 4 + (g * 7919) %% 7 + (g * 31) %% 3 - 1)) AS c2,
                 (g * 13) %% %(p)s AS tc,
                 (g * 17 + 5) %% %(p)s AS tr
          FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
        ) s
    """
    prompt = (
        "'Write an essay of about 1,500 words in the voice of Paul Graham on: Bench topic ' "
        "|| s.topic_id || '. Use plain words, short sentences and concrete examples.'"
    )
    generations = f"""
        INSERT INTO generations (id, job_id, topic_id, generator_key, provider, model, params,
                                 sample_index, prompt, text, finish_reason, status, attempts,
                                 prompt_tokens, completion_tokens, cost_usd, latency_ms,
                                 finished_at)
        SELECT 2 * s.g - 1 + k, s.job_id, s.topic_id, 'writer-' || w.model, 'openai', w.model,
               '{{"temperature": 0.8, "max_tokens": 2400}}'::jsonb, 0, {prompt},
               left(e.body, 200), 'stop', 'succeeded', 1, 60, 2000, 0.0012, 21000, now()
        {rows}
        CROSS JOIN (VALUES (0), (1)) AS kk(k)
        JOIN bench_writers w ON w.idx = CASE WHEN k = 0 THEN s.wc ELSE s.wr END
        JOIN bench_essay_pool e ON e.idx = CASE WHEN k = 0 THEN s.tc ELSE s.tr END
    """
    judgments = f"""
        INSERT INTO judgments (id, job_id, topic_id, generation_a_id, generation_b_id,
                               judge_provider, judge_model, winner, winner_generation_id,
                               reasoning, confidence, raw_answer, status, attempts,
                               prompt_tokens, completion_tokens, cost_usd, latency_ms,
                               finished_at)
        SELECT 2 * s.g - 1 + k, s.job_id, s.topic_id,
               CASE WHEN k = 0 THEN 2 * s.g - 1 ELSE 2 * s.g END,
               CASE WHEN k = 0 THEN 2 * s.g ELSE 2 * s.g - 1 END,
               'openai', '{JUDGE}', CASE WHEN k = 0 THEN 'A' ELSE 'B' END, 2 * s.g - 1,
               'The chosen essay makes one clear point with concrete examples.',
               CASE WHEN k = 0 THEN s.c1 ELSE s.c2 END,
               '{{"winner": "A", "reasoning": "...", "confidence": 8}}', 'succeeded', 1,
               4100, 60, 0.0109, 1800, now()
        {rows}
        CROSS JOIN (VALUES (0), (1)) AS kk(k)
    """
    pairs = f"""
        INSERT INTO pairs (id, job_id, topic_id, source, topic, prompt, chosen, rejected,
                           chosen_model, rejected_model, chosen_generation_id,
                           rejected_generation_id, judgment_reasoning, confidence, judge_model,
                           judgment_ids, verdicts)
        SELECT s.g, s.job_id, s.topic_id, 'judged',
               'Bench topic ' || s.topic_id || ': what makes an essay worth reading', {prompt},
               ec.body, er.body, wc.model, wr.model, 2 * s.g - 1, 2 * s.g,
               'The chosen essay makes one clear point with concrete examples.',
               (s.c1 + s.c2) / 2.0, '{JUDGE}',
               jsonb_build_array(2 * s.g - 1, 2 * s.g),
               jsonb_build_array(
                 jsonb_build_object('judgment_id', 2 * s.g - 1, 'order', 'AB',
                   'winner_generation_id', 2 * s.g - 1, 'confidence', s.c1, 'reasoning',
                   'The chosen essay makes one clear point with concrete examples.'),
                 jsonb_build_object('judgment_id', 2 * s.g, 'order', 'BA',
                   'winner_generation_id', 2 * s.g - 1, 'confidence', s.c2, 'reasoning',
                   'The chosen essay makes one clear point with concrete examples.'))
        {rows}
        JOIN bench_writers wc ON wc.idx = s.wc
        JOIN bench_writers wr ON wr.idx = s.wr
        JOIN bench_essay_pool ec ON ec.idx = s.tc
        JOIN bench_essay_pool er ON er.idx = s.tr
    """
    t0 = time.perf_counter()
    for lo in range(1, n + 1, chunk):
        hi = min(n, lo + chunk - 1)
        chunk_params = {**params, "lo": lo, "hi": hi}
        for sql in (generations, judgments, pairs):
            _exec(conn, sql, chunk_params)
        conn.commit()
        elapsed = time.perf_counter() - t0
        print(
            f"  seeded {hi:>9,} / {n:,} pairs  {elapsed:7.1f} s  {hi / elapsed:8.0f} pairs/s",
            flush=True,
        )
    for table in ("datagen_jobs", "topics", "generations", "judgments", "pairs"):
        _exec(conn, f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
    _exec(conn, "UPDATE bench_seed SET completed = true, seeded_at = now()")
    conn.commit()


def ensure_seeded(
    n: int,
    name: str = "chatpgt_bench",
    *,
    reseed: bool = False,
    per_job: int = 10_000,
    chunk: int = 20_000,
) -> str:
    """Make sure database ``name`` holds exactly a completed seed of ``n`` pairs (drop and seed
    it otherwise); returns its asyncpg SQLAlchemy URL."""
    if not name.startswith("chatpgt_bench"):
        raise SystemExit(f"refusing to touch database {name!r}: use a chatpgt_bench* name")
    url, async_url = db_urls(name)
    if not reseed and seeded_pairs(url) == (n, min(n, per_job)):
        print(f"database {name} already holds {n:,} seeded pairs (--reseed to seed again)")
        t0 = time.perf_counter()
        upgrade(async_url)  # a no-op at head; else builds what newer migrations add
        if time.perf_counter() - t0 > 1:
            print(f"  migrated to head in {time.perf_counter() - t0:.1f} s")
        return async_url
    pool, origin = essay_pool()
    mean_chars = sum(map(len, pool)) / len(pool)
    print(
        f"seeding {n:,} pairs into {name}: pool of {len(pool)} texts from {origin}, "
        f"{mean_chars:,.0f} characters on average (~{2 * n * mean_chars / 1e9:.1f} GB of pair text)"
    )
    with psycopg.connect(admin_url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    upgrade(async_url)
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        seed(conn, n, per_job, chunk, pool)
    seed_s = time.perf_counter() - t0
    with psycopg.connect(url, autocommit=True) as conn:
        t1 = time.perf_counter()
        # Fresh statistics and a set visibility map (index-only scans), as autovacuum would.
        conn.execute("VACUUM (ANALYZE) datagen_jobs, topics, generations, judgments, pairs")
        vacuum_s = time.perf_counter() - t1
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(
            f"seeded in {seed_s:.1f} s (+ {vacuum_s:.1f} s VACUUM ANALYZE); "
            f"database size {size.fetchone()[0]}"  # type: ignore[index]
        )
    return async_url


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--db", default="chatpgt_bench", help="database name (chatpgt_bench*)")
    p.add_argument("--reseed", action="store_true", help="drop and seed even if already seeded")
    p.add_argument("--pairs-per-job", type=int, default=10_000)
    p.add_argument("--chunk", type=int, default=20_000, help="pairs per INSERT transaction")
    args = p.parse_args()
    ensure_seeded(
        args.pairs, args.db, reseed=args.reseed, per_job=args.pairs_per_job, chunk=args.chunk
    )


if __name__ == "__main__":
    main()
