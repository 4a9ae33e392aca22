"""Online vs batch vs cached: one datagen job three ways against the fake provider.

    python bench/cost_modes.py --topics 200 --latency-ms 200 --batch-delay-s 5

1. online: N topics x 2 essays (writer-a, writer-b) + both-order verdicts, response cache on
   (a fresh database: every request is new);
2. batch: the same body with every generator and the judge in ``"mode": "batch"`` and
   ``"cache": false`` (so it really goes to the provider), the fake's batches completing after
   ``--batch-delay-s``; the job is run again every ``--poll-s`` until it ends, as the worker's
   task would (the wall time is mostly the provider's batch delay, by design);
3. cached: the online body submitted again (every answer from the response cache).

For each: the job's wall time, the requests the provider saw (online requests, batches, batch
requests), the recorded cost and what the job says it saved. The job runs in this process
(JobRunner); the fake server in its own. Prices: writer-a/-b $0.15/$0.60, judge $2.50/$10 per
million tokens, batch discount 50 %.

Needs Postgres (CHATPGT_BENCH_PG_ADMIN, default postgresql://postgres@127.0.0.1:5432/postgres):
a fresh database is created, migrated and dropped. ``--json PATH`` writes the figures there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
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
from chatpgt.datagen.runner import WAITING, JobRunner  # noqa: E402
from chatpgt.datagen.schemas import DatagenJobCreate  # noqa: E402
from chatpgt.db.session import make_engine, make_sessionmaker, transaction  # noqa: E402
from chatpgt.providers.client import ProviderPool  # noqa: E402
from chatpgt.settings import Settings, get_settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_request(topics: int, *, batch: bool, cache: bool) -> DatagenJobCreate:
    mode = {"mode": "batch"} if batch else {}
    return DatagenJobCreate.model_validate(
        {
            "topics": {"titles": [f"Cost topic {i}" for i in range(topics)]},
            "generators": [
                {"provider": "bench", "model": "writer-a", "max_tokens": 400, **mode},
                {"provider": "bench", "model": "writer-b", "max_tokens": 400, **mode},
            ],
            "judge": {"provider": "bench", "model": "judge", **mode},
            "cache": cache,
        }
    )


async def run_job(
    settings: Settings, sm: Any, fake: httpx.AsyncClient, req: DatagenJobCreate, poll_s: float
) -> dict[str, Any]:
    (await fake.post("/_control/reset")).raise_for_status()
    async with transaction(sm) as s:
        job, _ = await service.create_job(s, settings, req, None)
    t0 = time.perf_counter()
    runs = 0
    async with ProviderPool(settings.provider_configs()) as pool:
        while True:
            runs += 1
            status = await JobRunner(job.id, sm, pool, settings).run()
            if status != WAITING:
                break
            await asyncio.sleep(poll_s)
    wall = time.perf_counter() - t0
    async with sm() as s:
        view = await service.get_job_view(s, job.id)
    seen = (await fake.get("/_stats")).json()
    return {
        "status": view.status.value,
        "wall_s": round(wall, 2),
        "runs": runs,
        "items": view.generations.total + view.judgments.total,
        "pairs": view.pairs,
        "online_requests": seen["total"],
        "batches": seen.get("batches", 0),
        "batch_requests": seen.get("batch_requests", 0),
        "cost_usd": round(view.cost_usd, 6),
        "saved_usd": round(view.saved_usd, 6),
        "cache_hits": view.cache_hits,
    }


async def bench(args: argparse.Namespace, db_url: str, port: int) -> dict[str, Any]:
    settings = Settings(
        database_url=db_url,
        providers=[
            {
                "name": "bench",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "max_concurrency": args.concurrency,
                "timeout_s": 60,
                "supports_batch": True,
                "prices": {
                    "writer-a": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                    "writer-b": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                    "judge": {"input_per_mtok": 2.5, "output_per_mtok": 10},
                },
            }
        ],
        job_lease_s=60,
        job_heartbeat_s=5,
        batch_poll_s=args.poll_s,
    )
    engine = make_engine(db_url, pool_size=8)
    sm = make_sessionmaker(engine)
    out: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as fake:
            online = job_request(args.topics, batch=False, cache=True)
            out["online"] = await run_job(settings, sm, fake, online, args.poll_s)
            # The fake's batch delay is its start-up flag (run_job resets to that profile).
            batch = job_request(args.topics, batch=True, cache=False)
            out["batch"] = await run_job(settings, sm, fake, batch, args.poll_s)
            out["cached"] = await run_job(settings, sm, fake, online, args.poll_s)
    finally:
        await engine.dispose()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--topics", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--batch-delay-s", type=float, default=5.0)
    p.add_argument("--poll-s", type=float, default=1.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    admin_url = os.environ.get(
        "CHATPGT_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
    ).replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"chatpgt_cost_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql+asyncpg://")
    db_url = f"{base}/{name}"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "chatpgt.testing.fake_openai", "--port", str(port)]
        + ["--latency-ms", str(args.latency_ms), "--batch-delay-s", str(args.batch_delay_s)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    load_start = os.getloadavg()[0]
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
        result = asyncio.run(bench(args, db_url, port))
    finally:
        server.terminate()
        server.wait()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    result["args"] = vars(args) | {"json": str(args.json) if args.json else None}
    result["load_avg_1m"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"cost modes: {args.topics} topics x 2 essays + both-order verdicts; fake latency "
        f"{args.latency_ms:g} ms, batches done after {args.batch_delay_s:g} s"
    )
    print(
        f"{'mode':<8}{'wall':>9}{'online':>8}{'batches':>8}{'in bat.':>8}{'cost $':>10}"
        f"{'saved $':>10}{'hits':>6}"
    )
    for mode in ("online", "batch", "cached"):
        r = result[mode]
        print(
            f"{mode:<8}{r['wall_s']:>8.1f}s{r['online_requests']:>8}{r['batches']:>8}"
            f"{r['batch_requests']:>8}{r['cost_usd']:>10.4f}{r['saved_usd']:>10.4f}"
            f"{r['cache_hits']:>6}"
        )
    print("online: requests answered online; in bat.: requests answered inside batches")
    print(
        f"load average (1 min) {result['load_avg_1m']['start']:.2f} at the start, "
        f"{result['load_avg_1m']['end']:.2f} at the end"
    )


if __name__ == "__main__":
    main()
