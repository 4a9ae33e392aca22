"""Serving pairs under load: GET /pairs pages and GET /pairs/stats over a large seeded table.

Seeds (or reuses) the bench database with ``bench/seed_pairs.py``, then for each uvicorn worker
count starts the real API (``uvicorn api.main:app --workers N``, access log off) against it and
runs an asyncio + aiohttp load generator in this process:

- ``first``: ``GET /pairs?min_confidence=6&limit=50`` with no cursor (the first page);
- ``deep``: the same with the cursor of the pair at 99 % of the id range (the last 1 %);
- ``random``: a cursor drawn uniformly over the id range for every request (pages spread over
  the whole table, mostly not in Postgres' buffers);

each from ``--clients`` concurrent clients for ``--duration`` seconds in all, the phases taking
turns in ``--rounds`` rounds (others' load on a shared machine then hits them alike), bodies
read as bytes (one request per round is decoded and checked: page size, filter, order,
cursor). Then one client for ``--single-duration`` seconds on the first and the deep page (its
p50 is the latency a user sees), the EXPLAIN (ANALYZE, BUFFERS) of the deep page query, and
GET /pairs/stats timed ``--stats-runs`` times (median; the first run is reported apart).

CPU split: user+system seconds of the API processes, of the Postgres backends serving the bench
database (a backend that exits during a phase is not counted), of this load generator, and of
everything else on the machine, per phase, and the API's and Postgres' CPU per request.

``--floor`` measures instead the API next to a bare floor it starts itself (``bench/floor_app.py``:
ASGI, asyncpg and orjson over the same tables and the same SQL shape, no framework), taking
turns: first pages under load, then ``GET /pairs/stats`` latency, then whole JSONL exports, and
prints each figure and its ratio to the floor's in one table. ``--baseline-root DIR`` adds the
API of another checkout (``before``) to the same turns. The servers' pools together must stay
under Postgres' max_connections (``--api-pool``, ``--floor-pool``).

    python bench/api_load.py --pairs 1000000 --workers 1,2
    python bench/api_load.py --pairs 10000 --duration 10 --workers 1   # a quick run
    python bench/api_load.py --pairs 20000 --db chatpgt_bench_i24 --floor --workers 2 \
        --duration 24 --rounds 3 --api-pool 10 --floor-pool 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import psycopg
from sqlalchemy.dialects import postgresql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from seed_pairs import db_urls, ensure_seeded  # noqa: E402

from chatpgt.auth.schemas import ApiKeyCreate  # noqa: E402
from chatpgt.auth.service import create_key  # noqa: E402
from chatpgt.db.keyset import encode_cursor  # noqa: E402
from chatpgt.db.session import make_engine, make_sessionmaker  # noqa: E402
from chatpgt.pairs.repository import PairFilters, page_statement  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Api:
    """The real API in a subprocess (its own process group), against the bench database; or,
    with ``app="floor_app:app"``, the bare floor server (``bench/floor_app.py``)."""

    def __init__(
        self,
        async_url: str,
        workers: int,
        auth: str = "auto",
        *,
        app: str = "api.main:app",
        env: dict[str, str] | None = None,
        root: Path = ROOT,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "CHATPGT_DATABASE_URL": async_url,
            "CHATPGT_BROKER_URL": "redis://127.0.0.1:6379/15",
            "CHATPGT_EMBEDDED_WORKER": "false",
            "CHATPGT_AUTH": auth,
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1"]
        if app.startswith("floor_app:"):
            cmd += ["--app-dir", str(ROOT / "bench")]
        cmd += ["--port", str(self.port), "--workers", str(workers), "--no-access-log"]
        cmd += ["--log-level", "warning"]
        if root != ROOT:
            env["PYTHONPATH"] = str(root)
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the API exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                time.sleep(1.0)  # every worker has started by now on this machine
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the API did not start")

    def processes(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def postgres_backends(db: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(p.info.get("cmdline") or [])
        if cmdline.startswith("postgres:") and f" {db} " in cmdline:
            found.append(p)
    return found


def self_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def machine_cpu() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


class CpuSplit:
    """CPU seconds per party between ``start`` and ``stop``."""

    def __init__(self, api: Api, db: str) -> None:
        self.api, self.db = api, db

    def start(self) -> None:
        self.a0 = _cpu(self.api.processes())
        self.p0 = _cpu(postgres_backends(self.db))
        self.s0, self.m0, self.t0 = self_cpu(), machine_cpu(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        a1 = _cpu(self.api.processes())
        p1 = _cpu(postgres_backends(self.db))
        api = sum(v - self.a0.get(k, 0.0) for k, v in a1.items())
        pg = sum(v - self.p0.get(k, 0.0) for k, v in p1.items())
        gen = self_cpu() - self.s0
        total = machine_cpu() - self.m0
        wall = time.perf_counter() - self.t0
        return {
            "api": api,
            "postgres": pg,
            "loadgen": gen,
            "other": max(0.0, total - api - pg - gen),
            "capacity": wall * (psutil.cpu_count() or 1),
        }


@dataclass
class PhaseResult:
    name: str
    clients: int
    wall: float
    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    load: str = ""

    def load_range(self) -> str:
        """The 1-minute load average read at the end of each round: one value, or min-max."""
        values = sorted(float(v) for v in self.load.split(",") if v)
        if not values or values[0] == values[-1]:
            return f"{values[0]:.2f}" if values else "?"
        return f"{values[0]:.2f}-{values[-1]:.2f}"

    def merge(self, other: PhaseResult) -> None:
        """Add another round of the same phase (loads are read at the end of each round)."""
        self.wall += other.wall
        self.latencies += other.latencies
        self.bytes += other.bytes
        self.errors += other.errors
        self.error_samples += other.error_samples[: 3 - len(self.error_samples)]
        for key, value in other.cpu.items():
            self.cpu[key] = self.cpu.get(key, 0.0) + value
        self.load = f"{self.load},{other.load}"

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        c = self.cpu
        cpu = (
            f"cpu s: api {c['api']:.0f} pg {c['postgres']:.0f} loadgen {c['loadgen']:.0f} "
            f"other {c['other']:.0f} of {c['capacity']:.0f}; per request: api "
            f"{c['api'] / max(1, self.requests) * 1000:.1f} ms, pg "
            f"{c['postgres'] / max(1, self.requests) * 1000:.1f} ms"
            if c
            else ""
        )
        return (
            f"  {self.name:<8} {self.clients:>3} cl  {self.requests / self.wall:7.1f} req/s  "
            f"{self.bytes / self.wall / 1e6:7.1f} MB/s  p50 {self.pct(0.5):7.1f} ms  "
            f"p99 {self.pct(0.99):7.1f} ms  errors {self.errors}  load {self.load_range()}  {cpu}"
        )


def validate(body: bytes, min_confidence: float, limit: int, after_id: int | None) -> None:
    page = orjson.loads(body)
    items = page["items"]
    ids = [item["id"] for item in items]
    assert len(items) == limit, f"{len(items)} items, expected {limit}"
    assert all(item["confidence"] >= min_confidence for item in items), "filter not applied"
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "not in id order"
    assert after_id is None or ids[0] > after_id, "page does not start after the cursor"
    assert page["next_cursor"] == encode_cursor(ids[-1]), "bad next_cursor"
    assert all(len(item["chosen"]) > 1000 for item in items), "texts missing"


async def run_phase(
    name: str,
    base: str,
    clients: int,
    duration: float,
    query: dict[str, Any],
    cursors: Any,
    split: CpuSplit | None,
    headers: dict[str, str] | None = None,
) -> PhaseResult:
    """``clients`` loops issuing GET /pairs for ``duration`` seconds; ``cursors()`` gives the
    ``(cursor, after_id)`` of each request."""
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as http:
        cursor, after_id = cursors()
        params = {**query, **({"cursor": cursor} if cursor else {})}
        async with http.get(f"{base}/pairs", params=params) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise SystemExit(f"{name}: validation request got {resp.status}: {body[:300]!r}")
            validate(body, query["min_confidence"], query["limit"], after_id)
        result = PhaseResult(name, clients, duration)
        deadline = time.perf_counter() + duration

        async def client() -> None:
            while time.perf_counter() < deadline:
                cursor, _ = cursors()
                params = {**query, **({"cursor": cursor} if cursor else {})}
                t0 = time.perf_counter()
                try:
                    async with http.get(f"{base}/pairs", params=params) as resp:
                        data = await resp.read()
                        ok = resp.status == 200
                except (TimeoutError, aiohttp.ClientError) as exc:
                    ok, data = False, repr(exc).encode()
                if ok:
                    result.latencies.append(time.perf_counter() - t0)
                    result.bytes += len(data)
                else:
                    result.errors += 1
                    if len(result.error_samples) < 3:
                        result.error_samples.append(data[:200].decode(errors="replace"))

        if split:
            split.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        result.wall = time.perf_counter() - t0
        if split:
            result.cpu = split.stop()
        result.load = loadavg().split()[0]
        return result


async def time_stats(
    base: str, runs: int, query: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[float, list[float]]:
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            async with http.get(f"{base}/pairs/stats", params=query) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"/pairs/stats got {resp.status}: {body[:300]!r}")
            times.append(time.perf_counter() - t0)
        return times[0], times[1:]


def explain_deep(sync_url: str, filters: PairFilters, after_id: int, limit: int) -> str:
    stmt = page_statement(filters, after_id=after_id, limit=limit + 1)
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with psycopg.connect(sync_url) as conn:
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}").fetchall()  # type: ignore[arg-type]
    return "\n".join("    " + r[0] for r in rows)


async def bench_key(async_url: str) -> str:
    """A read key in the bench database, for runs with ``CHATPGT_AUTH=required``."""
    engine = make_engine(async_url)
    try:
        async with make_sessionmaker(engine)() as session:
            request = ApiKeyCreate(name=f"api-load-{os.getpid()}", scope="read")
            created = await create_key(session, request)
            await session.commit()
    finally:
        await engine.dispose()
    return created.key.get_secret_value()


async def stream_export(base: str, query: dict[str, Any]) -> tuple[int, float]:
    """``GET /pairs/export`` read to the end and counted (nothing written): bytes and seconds."""
    timeout = aiohttp.ClientTimeout(total=3600, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        t0 = time.perf_counter()
        async with http.get(f"{base}/pairs/export", params=query) as resp:
            if resp.status != 200:
                raise SystemExit(f"export got {resp.status}: {(await resp.read())[:300]!r}")
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 20):
                size += len(chunk)
        return size, time.perf_counter() - t0


def _rss_mb(server: Api) -> float:
    total = 0
    for proc in server.processes():
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6


def versus_floor(args: argparse.Namespace, async_url: str, sync_url: str, workers: int) -> None:
    """The API and the bare floor (``bench/floor_app.py``) side by side, taking turns: pages
    under load, stats latency, export throughput; each figure as a ratio to the floor's. With
    ``--baseline-root``, the API of that checkout too (``before``), in the same turns."""
    floor_env = {"FLOOR_DATABASE_URL": sync_url, "FLOOR_POOL_SIZE": str(args.floor_pool)}
    api_env = {"CHATPGT_API_DB_POOL_SIZE": str(args.api_pool)} if args.api_pool else None
    servers = {"api": Api(async_url, workers, env=api_env)}
    if args.baseline_root:
        servers["before"] = Api(async_url, workers, root=Path(args.baseline_root).resolve())
    servers["floor"] = Api(async_url, workers, app="floor_app:app", env=floor_env)
    names = list(servers)
    query = {"min_confidence": args.min_confidence, "limit": args.limit}
    try:
        for server in servers.values():
            server.wait_ready()
        print(
            f"uvicorn --workers {workers}: {', '.join(names)}, {args.rounds} turns each; "
            f"load {loadavg()}",
            flush=True,
        )
        pages: dict[str, PhaseResult] = {}
        for turn in range(args.rounds):
            for name in names if turn % 2 == 0 else names[::-1]:
                split = CpuSplit(servers[name], args.db)
                r = asyncio.run(
                    run_phase(
                        name,
                        servers[name].base,
                        args.clients,
                        args.duration / args.rounds,
                        query,
                        lambda: (None, None),
                        split,
                    )
                )
                if name in pages:
                    pages[name].merge(r)
                else:
                    pages[name] = r
        for r in pages.values():
            print(r.line(), flush=True)
            for sample in r.error_samples:
                print(f"    error: {sample}")

        filters: tuple[tuple[str, dict[str, Any]], ...] = (
            ("no filter", {}),
            ("min_conf", {"min_confidence": args.min_confidence}),
        )
        stats: dict[tuple[str, str], tuple[float, list[float]]] = {}
        for label, stats_q in filters if args.stats_runs > 1 else ():
            for name in names:
                stats[(name, label)] = asyncio.run(
                    time_stats(servers[name].base, args.stats_runs, stats_q)
                )

        export: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
        rss_growth: dict[str, float] = dict.fromkeys(names, 0.0)
        for turn in range(args.export_runs):
            for name in names if turn % 2 == 0 else names[::-1]:
                before = _rss_mb(servers[name])
                export[name].append(
                    asyncio.run(stream_export(servers[name].base, {"format": "jsonl"}))
                )
                rss_growth[name] = max(rss_growth[name], _rss_mb(servers[name]) - before)
    finally:
        for server in servers.values():
            server.stop()

    def per_page(name: str, party: str) -> float:
        return pages[name].cpu[party] / max(1, pages[name].requests) * 1e3

    figures: dict[str, dict[str, float]] = {name: {} for name in names}
    for name in names:
        r = pages[name]
        f = figures[name]
        f["pages req/s"] = r.requests / r.wall
        f["pages MB/s"] = r.bytes / r.wall / 1e6
        f["pages p50 ms"] = r.pct(0.5)
        f["server CPU ms/page"] = per_page(name, "api")
        f["Postgres CPU ms/page"] = per_page(name, "postgres")
        for label, _ in filters if stats else ():
            f[f"stats {label} p50 ms"] = statistics.median(stats[(name, label)][1]) * 1e3
        if not export[name]:
            continue
        f["export MB/s"] = statistics.median(size / wall / 1e6 for size, wall in export[name])
        f["export RSS growth MB"] = rss_growth[name]
        if len({size for size, _ in export[name]}) != 1:
            print(f"  warning: the {name} exports differ in size")
    header = "".join(f"{name:>9}" for name in names)
    ratios = "".join(f"{name + '/fl':>10}" for name in names if name != "floor")
    print(f"  {'':<24}{header}{ratios}")
    for key in figures["api"]:
        values = "".join(f"{figures[name][key]:9.1f}" for name in names)
        floor = figures["floor"][key]
        shares = "".join(
            f"{figures[name][key] / floor:10.2f}" if floor else f"{'-':>10}"
            for name in names
            if name != "floor"
        )
        print(f"  {key:<24}{values}{shares}")
    notes = []
    if stats:
        firsts = ", ".join(
            f"{name} {stats[(name, 'no filter')][0] * 1e3:.0f} ms"
            for name in names
            if name != "floor"
        )
        notes.append(f"stats: median of {args.stats_runs - 1} after a first read ({firsts})")
    if export["api"]:
        notes.append(
            f"export: median of {args.export_runs}, {export['api'][0][0] / 1e6:.0f} MB from the "
            f"API, {export['floor'][0][0] / 1e6:.0f} MB from the floor; RSS growth: resident "
            "size after an export less before"
        )
    print(f"  {'; '.join(notes)}{'; ' if notes else ''}load {loadavg()}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--db", default="chatpgt_bench")
    p.add_argument("--reseed", action="store_true")
    p.add_argument("--workers", default="1,2", help="uvicorn worker counts to measure")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per loaded phase")
    p.add_argument("--single-duration", type=float, default=15.0)
    p.add_argument("--phases", default="first,deep,random")
    p.add_argument("--rounds", type=int, default=3, help="turns each phase's time is cut into")
    p.add_argument("--min-confidence", type=float, default=6.0)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--stats-runs", type=int, default=6, help="(--floor: under 2, none)")
    p.add_argument(
        "--floor",
        action="store_true",
        help="instead of the phases: the API and the bare floor (bench/floor_app.py: ASGI, "
        "asyncpg, orjson) side by side in turns, first pages, stats and export, as ratios",
    )
    p.add_argument(
        "--export-runs", type=int, default=3, help="exports per server (--floor; 0: none)"
    )
    p.add_argument("--floor-pool", type=int, default=20, help="the floor's asyncpg pool size")
    p.add_argument(
        "--api-pool",
        type=int,
        help="with --floor: CHATPGT_API_DB_POOL_SIZE of the API (default: the setting's); the "
        "servers' pools together must stay under Postgres' max_connections",
    )
    p.add_argument(
        "--baseline-root",
        help="with --floor: also run the API of this checkout (e.g. an earlier commit "
        "unpacked by git archive) in the same turns, as 'before'",
    )
    p.add_argument(
        "--auth",
        default="loopback",
        help="comma-separated: loopback (the defaults: no key from this machine) and/or key "
        "(CHATPGT_AUTH=required, every request with a read key)",
    )
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()  # the load generator's own CPU cost matters on 2 cores
    except ImportError:
        pass

    async_url = ensure_seeded(args.pairs, args.db, reseed=args.reseed)
    sync_url, _ = db_urls(args.db)
    with psycopg.connect(sync_url) as conn:
        max_id = int(conn.execute("SELECT max(id) FROM pairs").fetchone()[0])  # type: ignore[index]
    deep_after = int(max_id * 0.99)
    deep_cursor = encode_cursor(deep_after)
    rng = random.Random(1)
    span = max(1, max_id - 10 * args.limit)
    cursor_of = {
        "first": lambda: (None, None),
        "deep": lambda: (deep_cursor, deep_after),
        "random": lambda: (lambda a: (encode_cursor(a), a))(rng.randrange(span)),
    }
    query = {"min_confidence": args.min_confidence, "limit": args.limit}
    if args.floor:
        print(
            f"api vs floor: {args.pairs:,} pairs in {args.db}, GET /pairs?min_confidence="
            f"{args.min_confidence:g}&limit={args.limit} from {args.clients} clients, "
            f"{args.duration:g} s each; {psutil.cpu_count()} CPUs; load {loadavg()}",
            flush=True,
        )
        for workers in (int(w) for w in args.workers.split(",")):
            versus_floor(args, async_url, sync_url, workers)
        return
    print(
        f"api load: {args.pairs:,} pairs in {args.db}, GET /pairs?min_confidence="
        f"{args.min_confidence:g}&limit={args.limit}, {args.clients} clients x "
        f"{args.duration:g} s per phase; deep cursor after id {deep_after:,}; "
        f"{psutil.cpu_count()} CPUs; load {loadavg()}",
        flush=True,
    )
    explained = False
    runs = [
        (int(w), mode) for w in args.workers.split(",") for mode in args.auth.split(",") if mode
    ]
    for workers, mode in runs:
        if mode not in ("loopback", "key"):
            raise SystemExit(f"--auth: {mode!r} is neither loopback nor key")
        headers = None
        if mode == "key":
            headers = {"Authorization": f"Bearer {asyncio.run(bench_key(async_url))}"}
        api = Api(async_url, workers, auth="required" if mode == "key" else "auto")
        try:
            api.wait_ready()
            split = CpuSplit(api, args.db)
            print(f"uvicorn --workers {workers}, auth {mode}:", flush=True)
            # The phases take turns (``--rounds`` rounds each), so that a change in the load
            # others put on this shared machine hits every phase alike.
            phases = [name for name in args.phases.split(",") if name]
            results: dict[str, PhaseResult] = {}
            for _ in range(args.rounds):
                for phase in phases:
                    r = asyncio.run(
                        run_phase(
                            phase,
                            api.base,
                            args.clients,
                            args.duration / args.rounds,
                            query,
                            cursor_of[phase],
                            split,
                            headers,
                        )
                    )
                    if phase in results:
                        results[phase].merge(r)
                    else:
                        results[phase] = r
            for r in results.values():
                print(r.line(), flush=True)
                for sample in r.error_samples:
                    print(f"    error: {sample}")
            for phase in ("first", "deep") if args.single_duration > 0 else ():
                r = asyncio.run(
                    run_phase(
                        phase,
                        api.base,
                        1,
                        args.single_duration,
                        query,
                        cursor_of[phase],
                        split,
                        headers,
                    )
                )
                print(r.line(), flush=True)
            if not explained:
                stats_q: dict[str, Any]
                for stats_q in ({}, {"min_confidence": args.min_confidence}):
                    first, rest = asyncio.run(
                        time_stats(api.base, args.stats_runs, stats_q, headers)
                    )
                    label = "&".join(f"{k}={v:g}" for k, v in stats_q.items()) or "(no filter)"
                    print(
                        f"  GET /pairs/stats {label}: first {first * 1000:.0f} ms, median of "
                        f"next {len(rest)} {statistics.median(rest) * 1000:.0f} ms "
                        f"(min {min(rest) * 1000:.0f}, max {max(rest) * 1000:.0f}); "
                        f"load {loadavg()}",
                        flush=True,
                    )
        finally:
            api.stop()
        if not explained:
            filters = PairFilters(min_confidence=args.min_confidence)
            print("EXPLAIN (ANALYZE, BUFFERS) of the deep page query:")
            print(explain_deep(sync_url, filters, deep_after, args.limit), flush=True)
            explained = True


if __name__ == "__main__":
    main()
