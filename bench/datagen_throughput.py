"""Datagen throughput: N topics x 2 essays + both-order judgments against the fake provider.

Prints items/s next to the bound min(concurrency / latency, rate limit) and the service's own CPU
time per item (this process: the job runner, its provider client and its database writes; the
fake server and Postgres run in other processes).

    python bench/datagen_throughput.py --topics 3000 --concurrency 500 --latency-ms 2000

Needs Postgres (CHATPGT_BENCH_PG_ADMIN, default postgresql://postgres@127.0.0.1:5432/postgres).
A fresh database is created, migrated and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatpgt.datagen import service  # noqa: E402
from chatpgt.datagen.runner import JobRunner  # noqa: E402
from chatpgt.datagen.schemas import DatagenJobCreate  # noqa: E402
from chatpgt.db.session import make_engine, make_sessionmaker, transaction  # noqa: E402
from chatpgt.providers.client import ProviderPool  # noqa: E402
from chatpgt.settings import Settings, get_settings  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(args: argparse.Namespace, db_url: str, port: int) -> dict[str, float]:
    providers = [
        {
            "name": "bench",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "max_concurrency": args.concurrency,
            "requests_per_minute": args.rpm,
            "timeout_s": 60,
            "max_retries": 2,
            "prices": {
                "writer-a": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                "writer-b": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                "judge": {"input_per_mtok": 2.5, "output_per_mtok": 10},
            },
        }
    ]
    settings = Settings(database_url=db_url, providers=providers, job_lease_s=60, job_heartbeat_s=5)
    engine = make_engine(db_url, pool_size=8)
    sm = make_sessionmaker(engine)
    req = DatagenJobCreate.model_validate(
        {
            "topics": {"titles": [f"Bench topic {i}" for i in range(args.topics)]},
            "generators": [
                {"provider": "bench", "model": "writer-a", "max_tokens": args.max_tokens},
                {"provider": "bench", "model": "writer-b", "max_tokens": args.max_tokens},
            ],
            "judge": {"provider": "bench", "model": "judge"},
            "pairing": "best_vs_worst",
        }
    )
    async with transaction(sm) as s:
        job, _ = await service.create_job(s, settings, req, None)
    async with ProviderPool(settings.provider_configs()) as pool:
        runner = JobRunner(job.id, sm, pool, settings)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        cpu0, t0 = cpu_s(), time.perf_counter()
        status = await runner.run()
        wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    async with transaction(sm) as s:
        view = await service.get_job_view(s, job.id)
    await engine.dispose()
    items = view.generations.total + view.judgments.total
    done = view.generations.done + view.judgments.done
    bound = args.concurrency / (args.latency_ms / 1000)
    if args.rpm:
        bound = min(bound, args.rpm / 60)
    return {
        "status": status,  # type: ignore[dict-item]
        "items": items,
        "done": done,
        "pairs": view.pairs,
        "wall_s": wall,
        "items_per_s": items / wall,
        "bound_items_per_s": bound,
        "ratio_to_bound": items / wall / bound,
        "cpu_s": cpu,
        "cpu_ms_per_item": cpu / items * 1000,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--topics", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=500)
    p.add_argument("--latency-ms", type=int, default=2000)
    p.add_argument("--rpm", type=float, default=None, help="provider requests/min limit")
    p.add_argument("--max-tokens", type=int, default=300)
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    p.add_argument("--profile", metavar="PATH", help="write a cProfile of the job run to PATH")
    args = p.parse_args()

    admin_url = os.environ.get(
        "CHATPGT_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"chatpgt_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = (
        admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        + f"/{name}"
    )
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatpgt.testing.fake_openai",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--latency-ms",
            str(args.latency_ms),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        os.environ["CHATPGT_DATABASE_URL"] = db_url
        get_settings.cache_clear()
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.attributes["configure_logger"] = False
        command.upgrade(cfg, "head")
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        result = asyncio.run(run(args, db_url, port))
        stats = httpx.get(f"http://127.0.0.1:{port}/_stats", timeout=5).json()
        result["server_requests"] = stats["total"]
        result["server_max_in_flight"] = stats.get("max_concurrent", 0)
        result["server_outcomes"] = stats.get("by_outcome", {})
    finally:
        server.terminate()
        server.wait()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"datagen throughput: {args.topics} topics, concurrency {args.concurrency}, "
        f"latency {args.latency_ms} ms, rpm {args.rpm or 'none'}"
    )
    print(
        f"  job {result['status']}: {result['items']} items ({result['done']} done), "
        f"{result['pairs']} pairs in {result['wall_s']:.1f} s"
    )
    print(f"  throughput   {result['items_per_s']:8.1f} items/s")
    print(
        f"  bound        {result['bound_items_per_s']:8.1f} items/s  "
        f"(min(concurrency/latency, rate limit))"
    )
    print(f"  ratio        {result['ratio_to_bound']:8.1%}")
    print(
        f"  server saw   {result['server_requests']} requests, at most "
        f"{result['server_max_in_flight']} in flight, outcomes {result['server_outcomes']}"
    )
    print(f"  service CPU  {result['cpu_ms_per_item']:8.3f} ms/item ({result['cpu_s']:.1f} s)")


if __name__ == "__main__":
    main()
