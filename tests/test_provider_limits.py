"""The requests-per-minute limit shared through the real Redis by separate worker processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import redis.asyncio

from chatpgt.providers.limits import LimitsRedisBucket, ProviderLimiter
from tests.conftest import REDIS_TEST_URL
from tests.procs import ROOT

# One worker process: 20 tasks acquire and release permits on one key as fast as the limiter
# lets them from a wall-clock start given by the test until ``seconds`` later (the same window
# for every process, however long each took to start), then print how many they got.
WORKER = """
import asyncio, sys, time
import redis.asyncio
from chatpgt.providers.limits import ProviderLimiter

url, key, rpm = sys.argv[1], sys.argv[2], float(sys.argv[3])
start, seconds = float(sys.argv[4]), float(sys.argv[5])

async def main():
    client = redis.asyncio.Redis.from_url(url)
    await client.ping()
    limiter = ProviderLimiter(max_concurrency=20, requests_per_minute=rpm, redis=client, key=key)
    got = 0

    async def loop():
        nonlocal got
        while True:
            (await limiter.acquire()).release()
            got += 1

    await asyncio.sleep(max(0.0, start - time.time()))
    try:
        async with asyncio.timeout(seconds):
            await asyncio.gather(*(loop() for _ in range(20)))
    except TimeoutError:
        pass
    await client.aclose()
    print(got)

asyncio.run(main())
"""

RPM = 600.0  # 10 a second: a one-second window of 10
SECONDS = 4.0
START_IN_S = 4.0  # time for every process to start and connect


async def run_workers(keys: list[str]) -> list[int]:
    """Permits each of one process per key got in the same ``SECONDS`` window."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = str(time.time() + START_IN_S)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            *(REDIS_TEST_URL, key, str(RPM), start, str(SECONDS)),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for key in keys
    ]
    outs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return [int(out) for out, _ in outs]


# What one limit lets through in the window: one second's burst plus the rate over the window,
# and one more window's worth for the time between Redis' count and the process' clock.
ALLOWED = RPM / 60 * (1 + SECONDS + 1)


async def test_two_processes_on_one_key_stay_within_the_rate() -> None:
    base = f"chatpgt:test-limits:{uuid.uuid4().hex}"
    shared = f"{base}:shared"
    # Two processes on one key, and as the control two more on keys of their own (which the
    # shared bound must not be able to hold: it shows the count can fail).
    try:
        a, b, c, d = await run_workers([shared, shared, f"{base}:c", f"{base}:d"])
    finally:
        client = redis.asyncio.Redis.from_url(REDIS_TEST_URL)
        async for k in client.scan_iter(match=f"{base}*"):
            await client.delete(k)
        await client.aclose()
    # Both processes got permits, together no more than one limit allows, and at least the
    # first second's worth (nothing was stuck).
    assert a > 0 and b > 0
    assert RPM / 60 <= a + b <= ALLOWED
    # Two separate limits let through about twice as many in the same window.
    assert c + d > ALLOWED


def test_window_is_whole_seconds_and_never_above_the_rate() -> None:
    client = redis.asyncio.Redis.from_url(REDIS_TEST_URL)
    cases = {300: (1, 5), 200: (3, 10), 30: (2, 1), 0.5: (120, 1), 30_000: (1, 500)}
    for per_minute, (window_s, limit) in cases.items():
        bucket = LimitsRedisBucket(client, "chatpgt:test-limits:unused", per_minute)
        assert (bucket.window_s, bucket.limit) == (window_s, limit)
        assert bucket.limit / bucket.window_s <= per_minute / 60
    # A longer burst is a longer window with as many seconds' worth.
    long = LimitsRedisBucket(client, "chatpgt:test-limits:unused", 300, burst_s=2.0)
    assert (long.window_s, long.limit) == (2, 10)


async def test_limiter_shares_rpm_through_limits_and_keeps_tpm_refunds() -> None:
    client = redis.asyncio.Redis.from_url(REDIS_TEST_URL)
    key = f"chatpgt:test-limits:{uuid.uuid4().hex}"
    try:
        limiter = ProviderLimiter(
            max_concurrency=2,
            requests_per_minute=300,
            tokens_per_minute=60_000,
            redis=client,
            key=key,
        )
        async with await limiter.acquire(500) as permit:
            await permit.settle(100)  # tokens per minute (ours) takes the refund
        names = sorted([k.decode() async for k in client.scan_iter(match=f"{key}*")])
        assert names[0] == f"{key}:rpm:LIMITER/5/1/second" and names[1] == f"{key}:tpm"
    finally:
        async for k in client.scan_iter(match=f"{key}*"):
            await client.delete(k)
        await client.aclose()
