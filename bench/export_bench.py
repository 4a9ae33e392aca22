"""Exporting pairs: GET /pairs/export (TRL JSONL) at two sizes next to pandas ``to_csv``.

Seeds (or reuses) the bench database with ``bench/seed_pairs.py``. For each size in ``--rows``
it starts a fresh API process (``uvicorn api.main:app``, one worker, access log off), makes one
small request, then streams ``GET /pairs/export`` and counts bytes and lines as they arrive
(nothing is written to disk). Sizes below the table's size select the first jobs
(``job_id=1&job_id=2...``, ``--pairs-per-job`` pairs each); the full size has no filter.
The API process's resident memory is sampled during the export; its peak (VmHWM) and the
resident size before the export are printed.

pandas, the seed project's way (``pd.read_sql`` of the seed CSV columns, then
``DataFrame.to_csv``), runs in a subprocess on the same rows for each size in ``--pandas-rows``
(each character of the CSV is encoded and counted, not written to disk); its peak RSS is the
subprocess's ``ru_maxrss``. pandas holds every text as a Python object (~10 GB at 100k rows
here), so 1M rows (~18 GB of text) do not fit in this machine's 24 GB: its sizes stop at 100k.

``--floor-rows`` adds, for those sizes, Postgres ``COPY (SELECT json_build_object(...)) TO
STDOUT`` read by psycopg: one backend producing JSON without Python in the way (the floor in
../shared/PERFORMANCE.md).

    python bench/export_bench.py --pairs 1000000 --rows 100000,1000000 \\
        --pandas-rows 10000,50000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_load import Api, loadavg  # noqa: E402
from seed_pairs import db_urls, ensure_seeded  # noqa: E402

from chatpgt.pairs.formats import SEED_CSV_COLUMNS  # noqa: E402

PANDAS_SCRIPT = """
import json, resource, sys, time
import pandas as pd
from sqlalchemy import create_engine

url, sql = sys.argv[1], sys.argv[2]

class Counter:
    n = 0
    def write(self, s):
        self.n += len(s.encode())

engine = create_engine(url)
t0 = time.perf_counter()
with engine.connect() as conn:
    df = pd.read_sql(sql, conn)
t1 = time.perf_counter()
out = Counter()
df.to_csv(out, index=False)
t2 = time.perf_counter()
print(json.dumps({"rows": len(df), "bytes": out.n, "read_s": t1 - t0, "write_s": t2 - t1,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def job_filter(rows: int, total: int, per_job: int) -> list[int]:
    """The job ids holding the first ``rows`` pairs; empty (no filter) for the whole table."""
    if rows >= total:
        return []
    if rows % per_job:
        raise SystemExit(f"--rows must be a multiple of --pairs-per-job ({per_job})")
    return list(range(1, rows // per_job + 1))


async def stream_export(
    base: str, job_ids: list[int], fmt: str = "jsonl"
) -> tuple[int, int, float]:
    params = [("format", fmt), *(("job_id", str(j)) for j in job_ids)]
    timeout = aiohttp.ClientTimeout(total=3600, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        async with http.get(f"{base}/pairs/export", params=params) as resp:
            if resp.status != 200:
                raise SystemExit(f"export got {resp.status}: {(await resp.read())[:300]!r}")
            size = lines = 0
            async for chunk in resp.content.iter_chunked(1 << 20):
                size += len(chunk)
                lines += chunk.count(b"\n")
        return size, lines, time.perf_counter() - t0


def api_export(async_url: str, job_ids: list[int], fmt: str = "jsonl") -> dict[str, float]:
    """``GET /pairs/export?format=fmt`` from a fresh API process: bytes, newlines, wall time and
    the process's memory and CPU."""
    api = Api(async_url, workers=1)
    try:
        api.wait_ready()
        proc = psutil.Process(api.proc.pid)
        asyncio.run(_warm(api.base))
        before = status_kb(proc.pid, "VmRSS")
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                samples.append(status_kb(proc.pid, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = sum(proc.cpu_times()[:2])
        size, lines, wall = asyncio.run(stream_export(api.base, job_ids, fmt))
        done.set()
        sampler.join()
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        return {
            "rows": lines,
            "bytes": size,
            "wall_s": wall,
            "rss_before_mb": before / 1024,
            "rss_max_sampled_mb": max(samples or [0]) / 1024,
            "peak_rss_mb": status_kb(proc.pid, "VmHWM") / 1024,
            "api_cpu_s": cpu,
        }
    finally:
        api.stop()


async def _warm(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/pairs", params={"limit": 5}) as resp:
            await resp.read()


def where(job_ids: list[int]) -> str:
    return f"WHERE job_id IN ({', '.join(map(str, job_ids))})" if job_ids else ""


def pandas_export(sync_url: str, job_ids: list[int]) -> dict[str, float]:
    sql = f"SELECT {', '.join(SEED_CSV_COLUMNS)} FROM pairs {where(job_ids)} ORDER BY id"
    url = sync_url.replace("postgresql://", "postgresql+psycopg://", 1)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PANDAS_SCRIPT, url, sql], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        return {"failed": 1.0, "wall_s": wall, "error": out.stderr[-500:]}  # type: ignore[dict-item]
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = result["read_s"] + result["write_s"]
    return result


def copy_floor(sync_url: str, job_ids: list[int]) -> dict[str, float]:
    sql = (
        "COPY (SELECT json_build_object('prompt', json_build_array(json_build_object("
        "'role', 'user', 'content', prompt)), 'chosen', json_build_array(json_build_object("
        "'role', 'assistant', 'content', chosen)), 'rejected', json_build_array("
        "json_build_object('role', 'assistant', 'content', rejected)), 'id', id, 'topic', topic, "
        "'confidence', confidence, 'chosen_model', chosen_model, 'rejected_model', "
        f"rejected_model) FROM pairs {where(job_ids)} ORDER BY id) TO STDOUT"
    )
    size = 0
    with psycopg.connect(sync_url) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        with cur.copy(sql) as copy:  # type: ignore[arg-type]
            for block in copy:
                size += len(block)
        wall = time.perf_counter() - t0
    return {"bytes": size, "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--db", default="chatpgt_bench")
    p.add_argument("--reseed", action="store_true")
    p.add_argument("--pairs-per-job", type=int, default=10_000)
    p.add_argument("--rows", default="100000,1000000", help="export sizes (API, JSONL)")
    p.add_argument("--pandas-rows", default="10000,50000,100000", help="pandas sizes; '' for none")
    p.add_argument("--floor-rows", default="100000", help="sizes to time Postgres COPY of JSON")
    args = p.parse_args()

    async_url = ensure_seeded(args.pairs, args.db, reseed=args.reseed, per_job=args.pairs_per_job)
    sync_url, _ = db_urls(args.db)
    print(f"export bench: {args.pairs:,} pairs in {args.db}; load {loadavg()}", flush=True)
    for rows in [int(r) for r in args.rows.split(",") if r]:
        jobs = job_filter(rows, args.pairs, args.pairs_per_job)
        r = api_export(async_url, jobs)
        print(
            f"  API JSONL   {r['rows']:>9,} rows  {r['bytes'] / 1e6:9.0f} MB  "
            f"{r['wall_s']:7.1f} s  "
            f"{r['bytes'] / r['wall_s'] / 1e6:6.1f} MB/s  {r['rows'] / r['wall_s']:7.0f} rows/s  "
            f"RSS before {r['rss_before_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB "
            f"(sampled max {r['rss_max_sampled_mb']:.0f} MB)  API CPU {r['api_cpu_s']:.1f} s  "
            f"load {loadavg()}",
            flush=True,
        )
        if str(rows) in args.floor_rows.split(","):
            f = copy_floor(sync_url, jobs)
            print(
                f"  COPY JSON   {rows:>9,} rows  {f['bytes'] / 1e6:9.0f} MB  {f['wall_s']:7.1f} s  "
                f"{f['bytes'] / f['wall_s'] / 1e6:6.1f} MB/s  {rows / f['wall_s']:7.0f} rows/s  "
                f"load {loadavg()}",
                flush=True,
            )
    for rows in [int(r) for r in args.pandas_rows.split(",") if r]:
        jobs = job_filter(rows, args.pairs, args.pairs_per_job)
        r = pandas_export(sync_url, jobs)
        if r.get("failed"):
            print(f"  pandas CSV  {rows:>9,} rows  FAILED after {r['wall_s']:.0f} s: {r['error']}")
            continue
        print(
            f"  pandas CSV  {r['rows']:>9,} rows  {r['bytes'] / 1e6:9.0f} MB  "
            f"{r['wall_s']:7.1f} s  "
            f"{r['bytes'] / r['wall_s'] / 1e6:6.1f} MB/s  {r['rows'] / r['wall_s']:7.0f} rows/s  "
            f"(read_sql {r['read_s']:.1f} s, to_csv {r['write_s']:.1f} s)  "
            f"peak RSS {r['peak_rss_mb']:.0f} MB  load {loadavg()}",
            flush=True,
        )


if __name__ == "__main__":
    main()
