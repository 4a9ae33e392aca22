"""Rate limiters: ours (chatpgt.providers.limits) against aiolimiter and limits, at 1,000 tasks.

Every case runs ``--tasks`` coroutines (1,000: the datagen bench's in-flight count) that take
``--n`` permits between them through one limiter, and prints the rate they got against the
limit, the most takes seen in any one second (the limit must hold over short windows, not just
over the run) and the CPU each take cost. Two loads:

- *overhead*: a limit far above what is asked (nothing waits): the CPU of the limiter alone;
- *limited*: ``--rate`` per second with a one-second burst: the rate held, and the CPU of waiting.

In-process: ``LocalBucket`` against ``aiolimiter.AsyncLimiter`` (a leaky bucket that waits).
Shared through Redis, side by side in one process and in two processes at once on one key (the
combined rate must stay under the limit): ``RedisBucket`` (ours, one Lua script per take,
waiters queue on a local lock) against ``LimitsRedisBucket`` (``limits``' async Redis storage
on our connection pool, a moving window; hits straight through while nobody waits, then one
waiter a process sleeping until the window's reset) and the same class with ``limits``'
sliding window counter.

    python bench/limiter_bench.py            # Redis at CHATPGT_BENCH_REDIS (redis://127.0.0.1:6379/0)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing as mp
import os
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatpgt.providers.limits import LimitsRedisBucket, LocalBucket, RedisBucket  # noqa: E402

REDIS_URL = os.environ.get("CHATPGT_BENCH_REDIS", "redis://127.0.0.1:6379/0")
Take = Callable[[], Awaitable[None]]
Result = tuple[float, float, list[float]]


def cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


async def drive(take: Take, n: int, tasks: int) -> Result:
    """(wall seconds, CPU seconds, wall-clock time of every take) for ``n`` takes."""
    left = iter(range(n))
    stamps: list[float] = []

    async def worker() -> None:
        for _ in left:
            await take()
            stamps.append(time.time())

    cpu0, t0 = cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return time.perf_counter() - t0, cpu_s() - cpu0, stamps


def most_in_one_second(stamps: list[float]) -> int:
    """The most takes that fell in any one-second window."""
    stamps = sorted(stamps)
    return max((bisect.bisect_right(stamps, t + 1.0) - i for i, t in enumerate(stamps)), default=0)


async def make_take(kind: str, per_s: float, key: str) -> tuple[Take, Take]:
    """A take function for one limiter, and its cleanup."""

    async def nothing() -> None:
        return None

    if kind == "ours-local":
        bucket = LocalBucket(per_s * 60)
        return (lambda: bucket.take(1)), nothing
    if kind == "aiolimiter":
        from aiolimiter import AsyncLimiter

        limiter = AsyncLimiter(per_s, 1.0)
        return (lambda: limiter.acquire(1)), nothing

    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)

    async def close_redis() -> None:
        await redis.aclose()

    if kind == "ours-redis":
        rbucket = RedisBucket(redis, key, per_s * 60)
        return (lambda: rbucket.take(1)), close_redis
    if kind in ("limits-moving", "limits-sliding"):
        from limits.aio.strategies import (
            MovingWindowRateLimiter,
            SlidingWindowCounterRateLimiter,
        )

        strategy = (
            MovingWindowRateLimiter if kind == "limits-moving" else SlidingWindowCounterRateLimiter
        )
        lbucket = LimitsRedisBucket(redis, key, per_s * 60, strategy=strategy)
        return (lambda: lbucket.take(1)), close_redis
    raise ValueError(kind)


def child(kind: str, per_s: float, key: str, n: int, tasks: int, out: mp.Queue[Result]) -> None:
    async def main() -> Result:
        take, close = await make_take(kind, per_s, key)
        try:
            await take()  # connect and load the script before the clock starts
            return await drive(take, n - 1, tasks)
        finally:
            await close()

    out.put(asyncio.run(main()))


def run_case(kind: str, per_s: float, n: int, tasks: int, procs: int) -> dict[str, float]:
    key = f"chatpgt:bench:limiter:{uuid.uuid4().hex[:8]}"
    if procs == 1:
        q: mp.Queue[Result] = mp.Queue()
        child(kind, per_s, key, n, tasks, q)
        results = [q.get()]
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        ps = [
            ctx.Process(target=child, args=(kind, per_s, key, n // procs, tasks // procs, q))
            for _ in range(procs)
        ]
        for p in ps:
            p.start()
        results = [q.get() for _ in ps]
        for p in ps:
            p.join()
    if kind not in ("ours-local", "aiolimiter"):
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for k in r.scan_iter(match=f"{key}*"):
            r.delete(k)
        r.close()
    wall = max(r[0] for r in results)
    cpu = sum(r[1] for r in results)
    # The take before the clock in every process is not stamped: close enough.
    peak = most_in_one_second([t for r in results for t in r[2]])
    return {"rate": n / wall, "wall": wall, "cpu_us_per_take": cpu / n * 1e6, "peak": peak}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--n", type=int, default=20_000, help="takes in an in-process overhead case")
    p.add_argument("--redis-n", type=int, default=6_000, help="takes in a Redis overhead case")
    p.add_argument("--rate", type=float, default=500.0, help="limit per second, limited cases")
    p.add_argument("--seconds", type=float, default=4.0, help="length of a limited case")
    p.add_argument("--only", help="run only this limiter (ours-local, limits-moving, ...)")
    args = p.parse_args()
    print(
        f"limiters: {args.tasks} tasks, load average {os.getloadavg()[0]:.2f} at the start, "
        f"{os.cpu_count()} CPUs"
    )
    cases = [
        ("ours-local", 1, "in-process"),
        ("aiolimiter", 1, "in-process"),
        ("ours-redis", 1, "Redis, 1 process"),
        ("limits-moving", 1, "Redis, 1 process"),
        ("limits-sliding", 1, "Redis, 1 process"),
        ("ours-redis", 2, "Redis, 2 processes"),
        ("limits-moving", 2, "Redis, 2 processes"),
        ("limits-sliding", 2, "Redis, 2 processes"),
    ]
    print(
        f"{'limiter':15} {'where':19} {'load':9} {'limit/s':>8} {'got/s':>8} "
        f"{'max in 1 s':>10} {'CPU/take':>10}"
    )
    for kind, procs, where in cases:
        if args.only and kind != args.only:
            continue
        for load, per_s, n in (
            ("overhead", 1e7, args.n if procs == 1 and "local" in kind else args.redis_n),
            # One second of burst is taken at once, the rest at the rate.
            ("limited", args.rate, int(args.rate * (args.seconds + 1))),
        ):
            if kind == "aiolimiter" and load == "overhead":
                n = args.n
            r = run_case(kind, per_s, n, args.tasks, procs)
            limit = "none" if per_s >= 1e6 else f"{per_s:.0f}"
            # The burst (one second's worth) comes on top of the rate over the run.
            expect = "" if per_s >= 1e6 else f"  (allowed: {per_s * (1 + 1 / r['wall']):.0f}/s)"
            print(
                f"{kind:15} {where:19} {load:9} {limit:>8} {r['rate']:8.0f} {r['peak']:10.0f} "
                f"{r['cpu_us_per_take']:8.1f} us{expect}",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
