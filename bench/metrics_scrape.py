"""Time of one GET /metrics scrape's reads, on a seeded database.

Seeds ``chatpgt_bench_metrics`` with ``--pairs`` pairs (each: two generations, two judgments;
bench/seed_pairs.py), then runs :func:`chatpgt.observability.service.scrape` ``--repeat`` times
against it and the broker (``--broker``, default the test Redis) and prints the median and the
slowest scrape with each source's share, plus the exposition's size.

    python bench/metrics_scrape.py --pairs 2000        # a few thousand rows (docs/deploy.md)
    python bench/metrics_scrape.py --pairs 100000

Only databases named ``chatpgt_bench*`` are created or dropped (CHATPGT_BENCH_PG_ADMIN, default
postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.seed_pairs import ensure_seeded  # noqa: E402
from chatpgt.db.session import make_engine, make_sessionmaker  # noqa: E402
from chatpgt.observability.service import scrape  # noqa: E402


async def run(args: argparse.Namespace, url: str) -> None:
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    timings: list[float] = []
    body = b""
    try:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            body = await scrape(
                sessionmaker, broker_url=args.broker, queues=("datagen", "gpu"), timeout_s=5.0
            )
            timings.append(time.perf_counter() - t0)
    finally:
        await engine.dispose()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    sources = {
        s.labels["source"]: s.value
        for s in families["chatpgt_metrics_source_duration_seconds"].samples
    }
    up = {s.labels["source"]: s.value for s in families["chatpgt_metrics_source_up"].samples}
    items = sum(s.value for s in families["chatpgt_datagen_items"].samples)
    print(
        f"{int(items):,} item rows: scrape median {statistics.median(timings) * 1000:.1f} ms, "
        f"slowest {max(timings) * 1000:.1f} ms over {len(timings)} scrapes "
        f"(first scrape {timings[0] * 1000:.1f} ms, connections opened)"
    )
    print(
        "last scrape: "
        + ", ".join(f"{k} {v * 1000:.1f} ms (up={up[k]:g})" for k, v in sorted(sources.items()))
        + f"; {len(body):,} bytes, {len(families)} families"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--broker", default="redis://127.0.0.1:6379/11")
    p.add_argument("--db", default="chatpgt_bench_metrics", help="database name (chatpgt_bench*)")
    args = p.parse_args()
    url = ensure_seeded(args.pairs, args.db, per_job=min(args.pairs, 500), chunk=20_000)
    asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
