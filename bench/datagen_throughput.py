"""Datagen throughput: N topics x 2 essays + both-order judgments against the fake provider.

Prints items/s next to the bound min(concurrency / latency, rate limit) and the service's own CPU
time per item (this process: the job runner, its provider client and its database writes; the
fake server and Postgres run in other processes).

    python bench/datagen_throughput.py --topics 3000 --concurrency 500 --latency-ms 2000
    python bench/datagen_throughput.py --topics 3000 --concurrency 1000 --floor
    python bench/datagen_throughput.py --topics 3000 --concurrency 1000 --floor --procs 2

``--floor`` first runs the bare client (``httpx.AsyncClient`` on the aiohttp transport, no
limiter, retries or database) against the same server in the same process run: 2N essay
requests, ``--concurrency`` in flight. Then the job, and it prints the job's generation phase
(from the start until the last essay is in: every request the provider answered in that window,
essays and judgments alike, per second) as a ratio to the floor, and CPU per item of both.
The event loop's lag (how late a 50 ms timer fires) is sampled during the job.

``--procs K`` splits the topics into K jobs, each run by its own worker process (spawned, started
together) with ``--concurrency / K`` of the provider's concurrency; the figures are summed over
the processes (CPU, items; the generation window runs until the last essay of any job), against
the same single-process floor at the full ``--concurrency``.

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
from typing import Any

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
from chatpgt.providers.types import ChatRequest  # noqa: E402
from chatpgt.settings import Settings, get_settings  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def floor(args: argparse.Namespace, port: int, n: int) -> dict[str, float]:
    """The bare client: ``n`` essay requests, ``args.concurrency`` in flight, nothing else."""
    from httpx_aiohttp import AiohttpTransport

    c = args.concurrency
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    left = iter(range(n))
    failures = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in left:
            body = {
                "model": "writer-a" if i % 2 else "writer-b",
                "messages": [{"role": "user", "content": f"Write an essay on bench topic {i}."}],
                "max_tokens": args.max_tokens,
            }
            r = await client.post(url, json=body)
            if r.status_code != 200 or not r.json()["choices"][0]["message"]["content"]:
                failures += 1

    async with httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits), timeout=60, trust_env=False
    ) as client:
        cpu0, t0 = cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(c)))
        wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    return {
        "floor_requests": n,
        "floor_failures": failures,
        "floor_wall_s": wall,
        "floor_items_per_s": n / wall,
        "floor_cpu_ms_per_item": cpu / n * 1000,
    }


async def pool_only(args: argparse.Namespace, configs: dict[str, Any], n: int) -> dict[str, float]:
    """Our provider client alone (ProviderPool.chat: limiter, retries, parsing, costs), no runner
    or database: the same requests as the floor, to split the job's CPU into client and runner."""
    left = iter(range(n))

    async def worker(pool: ProviderPool) -> None:
        for i in left:
            req = ChatRequest(
                provider="bench",
                model="writer-a" if i % 2 else "writer-b",
                messages=[{"role": "user", "content": f"Write an essay on bench topic {i}."}],
                max_tokens=args.max_tokens,
            )
            assert (await pool.chat(req)).text

    async with ProviderPool(configs) as pool:
        cpu0, t0 = cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker(pool) for _ in range(args.concurrency)))
        wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    return {
        "pool_items_per_s": n / wall,
        "pool_wall_s": wall,
        "pool_cpu_ms_per_item": cpu / n * 1000,
    }


class GcTime:
    """Seconds this process spent in the cyclic garbage collector, by generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._t = 0.0

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._t
            self.count[info["generation"]] += 1

    def __enter__(self) -> GcTime:
        import gc

        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.callbacks.remove(self._cb)


class LoopLag:
    """How late a 50 ms timer fires on this loop: a busy loop delays every response it reads."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.05)
            self.samples.append((loop.time() - t - 0.05) * 1000)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
        xs = sorted(self.samples) or [0.0]
        return {
            "loop_lag_p50_ms": xs[len(xs) // 2],
            "loop_lag_p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))],
            "loop_lag_max_ms": xs[-1],
        }


async def generation_phase(sm: object, job_ids: list[int], t0_wall: float) -> dict[str, float]:
    """Requests answered from the jobs' start until their last essay was in, and essay
    latency."""
    from sqlalchemy import text as sql

    async with transaction(sm) as s:  # type: ignore[arg-type]
        row = (
            await s.execute(
                sql(
                    "SELECT max(finished_at) AS last, "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50, "
                    "percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99, "
                    "count(*) AS n FROM generations WHERE job_id = ANY(:j) AND status = 'succeeded'"
                ),
                {"j": job_ids},
            )
        ).one()
        judged = (
            await s.execute(
                sql(
                    "SELECT count(*) FROM judgments WHERE job_id = ANY(:j) "
                    "AND status = 'succeeded' AND finished_at <= :last"
                ),
                {"j": job_ids, "last": row.last},
            )
        ).scalar_one()
    window = row.last.timestamp() - t0_wall
    return {
        "gen_window_s": window,
        "gen_essays": row.n,
        "gen_judgments_in_window": judged,
        "gen_items_per_s": (row.n + judged) / window,
        "gen_essays_per_s": row.n / window,
        "essay_latency_p50_ms": float(row.p50),
        "essay_latency_p99_ms": float(row.p99),
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_providers(args: argparse.Namespace, port: int, concurrency: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "bench",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "max_concurrency": concurrency,
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


def bench_settings(db_url: str, providers: list[dict[str, Any]]) -> Settings:
    return Settings(database_url=db_url, providers=providers, job_lease_s=60, job_heartbeat_s=5)


async def run_one_job(
    settings: Settings, sm: Any, job_id: int, profile: str | None = None
) -> dict[str, Any]:
    """Run one job with its own ProviderPool in this process: status, wall, CPU, loop lag."""
    lag = LoopLag()
    async with ProviderPool(settings.provider_configs()) as pool:
        runner = JobRunner(job_id, sm, pool, settings)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        lag.start()
        with GcTime() as gc_time:
            cpu0, t0 = cpu_s(), time.perf_counter()
            status = await runner.run()
            wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
        out: dict[str, Any] = {"status": status, "wall_s": wall, "cpu_s": cpu, **lag.stop()}
        out["gc_s"] = round(sum(gc_time.seconds), 3)
        out["gc_full_collections"] = gc_time.count[2]
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    return out


def worker_process(
    db_url: str, providers: list[dict[str, Any]], job_id: int, ready: Any, go: Any, out: Any
) -> None:
    """``--procs``: one worker process running one job, started when the parent says go."""

    async def main() -> dict[str, Any]:
        engine = make_engine(db_url, pool_size=8)
        try:
            return await run_one_job(
                bench_settings(db_url, providers), make_sessionmaker(engine), job_id
            )
        finally:
            await engine.dispose()

    ready.put(job_id)
    go.wait()
    out.put((job_id, asyncio.run(main())))


async def run(args: argparse.Namespace, db_url: str, port: int) -> dict[str, Any]:
    procs = args.procs
    settings = bench_settings(db_url, bench_providers(args, port, args.concurrency))
    engine = make_engine(db_url, pool_size=8)
    sm = make_sessionmaker(engine)
    titles = [f"Bench topic {i}" for i in range(args.topics)]
    job_ids = []
    for k in range(procs):  # --procs K: K jobs of topics/K topics, one a process
        req = DatagenJobCreate.model_validate(
            {
                "topics": {"titles": titles[k::procs]},
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
        job_ids.append(job.id)
    extra: dict[str, Any] = {"load_avg_1m_start": os.getloadavg()[0]}
    if args.floor:
        extra.update(await floor(args, port, 2 * args.topics))
        extra.update(await pool_only(args, settings.provider_configs(), 2 * args.topics))
    if procs == 1:
        t0_wall = time.time()
        runs = [await run_one_job(settings, sm, job_ids[0], args.profile)]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        # Each process gets an equal share of the provider's concurrency.
        share = bench_providers(args, port, args.concurrency // procs)
        workers = [
            ctx.Process(target=worker_process, args=(db_url, share, j, ready, go, out))
            for j in job_ids
        ]
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=120)
        t0_wall = time.time()
        go.set()
        results = dict(out.get(timeout=600) for _ in workers)
        for w in workers:
            w.join()
        runs = [results[j] for j in job_ids]
    wall = max(r["wall_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    for key in ("loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms"):
        extra[key] = max(r[key] for r in runs)
    extra["gc_s"] = sum(r["gc_s"] for r in runs)
    extra["gc_full_collections"] = sum(r["gc_full_collections"] for r in runs)
    if procs > 1:
        extra["per_process_cpu_s"] = [round(r["cpu_s"], 2) for r in runs]
    items = done = pairs = 0
    async with transaction(sm) as s:
        for job_id in job_ids:
            view = await service.get_job_view(s, job_id)
            items += view.generations.total + view.judgments.total
            done += view.generations.done + view.judgments.done
            pairs += view.pairs
    extra.update(await generation_phase(sm, job_ids, t0_wall))
    if args.floor:
        extra["gen_ratio_to_floor"] = extra["gen_items_per_s"] / extra["floor_items_per_s"]
    await engine.dispose()
    bound = args.concurrency / (args.latency_ms / 1000)
    if args.rpm:
        bound = min(bound, args.rpm / 60)
    statuses = sorted({r["status"] for r in runs})
    return {
        "status": ",".join(statuses),
        "items": items,
        "done": done,
        "pairs": pairs,
        "wall_s": wall,
        "items_per_s": items / wall,
        "bound_items_per_s": bound,
        "ratio_to_bound": items / wall / bound,
        "cpu_s": cpu,
        "cpu_ms_per_item": cpu / items * 1000,
        "load_avg_1m": os.getloadavg()[0],
        **extra,
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
    p.add_argument(
        "--procs",
        type=int,
        default=1,
        help="run the work as this many jobs, one worker process each, sharing --concurrency",
    )
    p.add_argument(
        "--floor", action="store_true", help="first run the bare client, then compare (see above)"
    )
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
    print(
        f"  generation   {result['gen_items_per_s']:8.1f} requests/s answered until the last "
        f"essay ({result['gen_window_s']:.1f} s; {result['gen_essays_per_s']:.1f} essays/s, "
        f"{result['gen_judgments_in_window']} judgments in it), "
        f"essay latency p50 {result['essay_latency_p50_ms']:.0f} ms, "
        f"p99 {result['essay_latency_p99_ms']:.0f} ms"
    )
    print(
        f"  gc           {result['gc_s']:.3f} s in the cyclic collector "
        f"({result['gc_full_collections']} full collections)"
    )
    print(
        f"  loop lag     p50 {result['loop_lag_p50_ms']:.1f} ms, p99 "
        f"{result['loop_lag_p99_ms']:.1f} ms, max {result['loop_lag_max_ms']:.1f} ms"
    )
    if args.floor:
        print(
            f"  floor        {result['floor_items_per_s']:8.1f} requests/s bare client "
            f"({result['floor_requests']} in {result['floor_wall_s']:.1f} s, "
            f"{result['floor_failures']} failed), CPU {result['floor_cpu_ms_per_item']:.3f} ms/item"
        )
        print(
            f"  our client   {result['pool_items_per_s']:8.1f} requests/s ProviderPool.chat alone "
            f"({result['pool_wall_s']:.1f} s), CPU {result['pool_cpu_ms_per_item']:.3f} ms/item"
        )
        print(f"  project/floor {result['gen_ratio_to_floor']:7.1%} (generation phase)")
    if args.procs > 1:
        print(f"  processes    {args.procs}, CPU s each {result['per_process_cpu_s']}")
    print(
        f"  load average {result['load_avg_1m_start']:.2f} at the start, "
        f"{result['load_avg_1m']:.2f} at the end (1 min)"
    )


if __name__ == "__main__":
    main()
