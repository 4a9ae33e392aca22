"""Per-provider limits: concurrent requests, requests per minute, tokens per minute.

A :class:`ProviderLimiter` hands out a :class:`Permit` per HTTP attempt::

    permit = await limiter.acquire(estimated_tokens)
    try:
        response = await send()
    finally:
        permit.release()                     # frees the concurrency slot
    await permit.settle(actual_tokens)       # corrects the tokens-per-minute estimate

Concurrency is always counted in this process (an ``asyncio.Semaphore``). The per-minute buckets
are in this process by default; pass a ``redis.asyncio.Redis`` client to share them between every
process that uses the same key, so that a provider's limits hold across Celery workers.

Buckets refill continuously and hold ``burst_s`` seconds' worth of capacity (one second by
default), not a whole minute: providers enforce per-minute limits over shorter windows, and a
minute-sized burst would send a whole minute's requests at once and then stall.

Which bucket does what (figures in docs/benchmarks.md, ``bench/limiter_bench.py``): requests per
minute in one process are ``aiolimiter``'s leaky bucket (:class:`LeakyBucket`), as fast as ours at
1,000 waiting tasks. Requests per minute shared through Redis are ``limits``' moving window on the
caller's connection pool (:class:`LimitsRedisBucket`): faster than our Lua script while nothing
waits, and no window of ``burst_s`` seconds ever holds more than the rate allows (a refilling
bucket lets twice the rate through in the second after its burst). Tokens per minute keep ours,
:class:`LocalBucket` in one process and :class:`RedisBucket` (a Lua script) through Redis: a
request is charged its estimate (prompt + ``max_tokens``) and refunded what it did not use once
the usage is known, and neither aiolimiter nor limits can give capacity back.

Every key starts with the ``key`` given to :class:`ProviderLimiter` (``key_prefix`` of
:meth:`ProviderLimiter.from_config`), so deployments or test runs sharing one Redis keep their
limits apart.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import TYPE_CHECKING, Protocol

from aiolimiter import AsyncLimiter
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from chatpgt.settings import ProviderConfig


class RateBucket(Protocol):
    """A refilling bucket of units (requests or tokens)."""

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` units may be spent, then spend them."""
        ...

    async def adjust(self, delta: float) -> None:
        """Give back ``delta`` units (or charge more when negative) after the fact."""
        ...


class LocalBucket:
    """A token bucket in this process; waiters are served first come, first served.

    A request bigger than the bucket's capacity waits for a full bucket and then drives it
    into debt, so it is delayed in proportion to its size instead of waiting forever.
    """

    __slots__ = ("rate", "capacity", "level", "updated", "_lock")

    def __init__(self, per_minute: float, burst_s: float = 1.0) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def take(self, amount: float) -> None:
        need = min(amount, self.capacity)
        # Fast path without the lock, only when nobody queues ahead (keeps FIFO order).
        if not self._lock.locked():
            self._refill()
            if self.level >= need:
                self.level -= amount
                return
        async with self._lock:
            while True:
                self._refill()
                if self.level >= need:
                    self.level -= amount
                    return
                await asyncio.sleep((need - self.level) / self.rate)

    async def adjust(self, delta: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + delta)


class LeakyBucket:
    """``aiolimiter.AsyncLimiter`` as a :class:`RateBucket` without refunds: for requests per
    minute, where what is charged (one request) is what is spent. Holds ``burst_s`` seconds'
    worth (at least one request), like :class:`LocalBucket`."""

    __slots__ = ("_limiter",)

    def __init__(self, per_minute: float, burst_s: float = 1.0) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        rate = per_minute / 60.0
        capacity = max(1.0, rate * burst_s)
        self._limiter = AsyncLimiter(capacity, capacity / rate)

    async def take(self, amount: float) -> None:
        await self._limiter.acquire(amount)

    async def adjust(self, delta: float) -> None:
        raise NotImplementedError("a leaky bucket gives nothing back: use LocalBucket")


# KEYS[1]: the bucket hash. ARGV: rate per second, capacity, amount, need, ttl ms.
# Returns the seconds to wait as a string (Lua numbers become integers in replies); "0" = taken.
# An adjustment passes a negative amount (a refund) or a positive one (a charge) with a hugely
# negative need, so it always applies and never waits.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'level', 'ts')
local level = tonumber(state[1])
local ts = tonumber(state[2])
if level == nil or ts == nil then
  level = capacity
  ts = now
end
level = math.min(capacity, level + math.max(0, now - ts) * rate)
local wait = 0
if level >= need then
  level = level - amount
  if level > capacity then level = capacity end
else
  wait = (need - level) / rate
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(wait)
"""


_ALWAYS = -1e18


class RedisBucket:
    """A token bucket kept in Redis, shared by every process that uses the same key.

    Redis' own clock is used, so processes on machines with skewed clocks agree. Within one
    process waiters queue on a local lock, so only one of them polls Redis at a time.
    """

    __slots__ = ("rate", "capacity", "key", "_redis", "_script", "_lock", "_ttl_ms")

    def __init__(self, redis: Redis, key: str, per_minute: float, burst_s: float = 1.0) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.key = key
        self._redis = redis
        self._script = redis.register_script(_BUCKET_LUA)
        self._lock = asyncio.Lock()
        # An idle bucket refills completely, so an expired key (read as full) is the same state.
        self._ttl_ms = int(max(60.0, 2 * self.capacity / self.rate) * 1000)

    async def _call(self, amount: float, need: float) -> float:
        args = [self.rate, self.capacity, amount, need, self._ttl_ms]
        return float(await self._script(keys=[self.key], args=args))

    async def take(self, amount: float) -> None:
        need = min(amount, self.capacity)
        async with self._lock:
            while True:
                wait = await self._call(amount, need)
                if wait <= 0:
                    return
                await asyncio.sleep(wait)

    async def adjust(self, delta: float) -> None:
        if delta:
            await self._call(-delta, _ALWAYS)


def _moving_window(per_minute: float, burst_s: float) -> tuple[int, int]:
    """(window seconds, requests in it) for a moving window that holds ``per_minute``.

    ``limits`` counts in whole seconds, so the window is the shortest one of at least
    ``burst_s`` (and one second) whose whole number of requests is within 5 % of the rate;
    the count is rounded down, so the window never admits more than the rate.
    """
    rate = per_minute / 60.0
    first = max(1, math.ceil(burst_s))
    for window in range(first, first + 3600):
        limit = math.floor(rate * window + 1e-9)
        if limit >= 1 and limit >= 0.95 * rate * window:
            return window, limit
    return math.ceil(1.0 / rate), 1


class LimitsRedisBucket:
    """``limits``' moving window in Redis as a :class:`RateBucket` without refunds: requests
    per minute shared by every process that uses the same key.

    The window is ``burst_s`` seconds (whole seconds, at least one) holding that many seconds'
    worth of requests, so no window of that length ever sees more than the rate allows. It
    runs on the caller's ``redis.asyncio`` connection pool. ``take`` tries a hit directly
    while nobody in this process waits (at most ``max_in_flight`` commands at once); a refused
    take queues on a local lock, and the head of the queue sleeps until the window's oldest
    entry expires (``get_window_stats``' reset time) plus a little jitter, so only one waiter
    a process polls Redis. The timestamps are the processes' own clocks (``time.time()``):
    keep the hosts' clocks in sync (NTP). ``strategy`` is there for the bench, which compares
    limits' sliding window counter (it lets 10-30 % more through in a second when saturated).
    """

    __slots__ = ("window_s", "limit", "_item", "_strategy", "_lock", "_gate", "_jitter_s")

    def __init__(
        self,
        redis: Redis,
        key: str,
        per_minute: float,
        burst_s: float = 1.0,
        *,
        max_in_flight: int = 32,
        strategy: type[MovingWindowRateLimiter | SlidingWindowCounterRateLimiter] = (
            MovingWindowRateLimiter
        ),
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.window_s, self.limit = _moving_window(per_minute, burst_s)
        self._item = RateLimitItemPerSecond(self.limit, self.window_s)
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=key,
            # limits types its pass-through options as scalars; redis-py takes the pool.
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._strategy = strategy(storage)
        self._lock = asyncio.Lock()
        self._gate = asyncio.Semaphore(max_in_flight)
        # Spreads the processes that wait for the same expiry over one request's interval.
        self._jitter_s = min(0.05, self.window_s / self.limit)

    async def _hit(self, cost: int) -> bool:
        async with self._gate:
            return await self._strategy.hit(self._item, cost=cost)

    async def take(self, amount: float) -> None:
        # A take bigger than the window waits for a whole empty window (it could never fit).
        cost = min(max(1, math.ceil(amount)), self.limit)
        if not self._lock.locked() and await self._hit(cost):
            return
        async with self._lock:
            while not await self._hit(cost):
                async with self._gate:
                    stats = await self._strategy.get_window_stats(self._item)
                wait = stats.reset_time - time.time()
                await asyncio.sleep(max(0.001, wait) + random.uniform(0, self._jitter_s))

    async def adjust(self, delta: float) -> None:
        raise NotImplementedError("limits gives nothing back: use RedisBucket")


class Permit:
    """One attempt's right to send: a concurrency slot plus the tokens charged for it.

    ``release()`` frees the slot (idempotent; call it as soon as the response is read).
    ``settle(actual_tokens)`` corrects the tokens-per-minute charge once the real usage is known;
    a permit that is never settled keeps its estimate charged, which errs on the safe side.
    """

    __slots__ = ("_limiter", "estimated_tokens", "_released", "_settled")

    def __init__(self, limiter: ProviderLimiter, estimated_tokens: int) -> None:
        self._limiter = limiter
        self.estimated_tokens = estimated_tokens
        self._released = False
        self._settled = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release()

    async def settle(self, actual_tokens: int) -> None:
        if self._settled:
            return
        self._settled = True
        tpm = self._limiter._tpm
        if tpm is not None and actual_tokens != self.estimated_tokens:
            await tpm.adjust(self.estimated_tokens - actual_tokens)

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class ProviderLimiter:
    """Concurrency, requests-per-minute and tokens-per-minute limits for one provider.

    ``acquire`` waits for a concurrency slot first and then for the rate buckets, so a request
    that holds a slot is one that is about to be sent. Pass ``redis`` to share the per-minute
    buckets across processes under ``key`` (the concurrency limit stays per process: divide the
    provider's concurrency among the processes when that matters).
    """

    __slots__ = ("max_concurrency", "_sem", "_rpm", "_tpm", "_paused_until", "_in_flight")

    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_s: float = 1.0,
        redis: Redis | None = None,
        key: str = "chatpgt:limits:default",
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self._sem = asyncio.Semaphore(max_concurrency)
        self._rpm: RateBucket | None = None
        self._tpm: RateBucket | None = None
        if requests_per_minute:
            self._rpm = (
                LimitsRedisBucket(redis, f"{key}:rpm", requests_per_minute, burst_s)
                if redis is not None
                else LeakyBucket(requests_per_minute, burst_s)
            )
        if tokens_per_minute:
            self._tpm = (
                RedisBucket(redis, f"{key}:tpm", tokens_per_minute, burst_s)
                if redis is not None
                else LocalBucket(tokens_per_minute, burst_s)
            )
        self._paused_until = 0.0
        self._in_flight = 0

    @classmethod
    def from_config(
        cls,
        config: ProviderConfig,
        *,
        redis: Redis | None = None,
        key_prefix: str = "chatpgt:limits",
        burst_s: float = 1.0,
    ) -> ProviderLimiter:
        """The limiter a provider's configuration asks for; shared via Redis when given one."""
        return cls(
            max_concurrency=config.max_concurrency,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            burst_s=burst_s,
            redis=redis,
            key=f"{key_prefix}:{config.name}",
        )

    @property
    def in_flight(self) -> int:
        """Permits handed out and not yet released."""
        return self._in_flight

    def pause(self, seconds: float) -> None:
        """Hold back new permits for ``seconds`` (the provider said Retry-After to one of us)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until

    async def acquire(self, estimated_tokens: int = 0) -> Permit:
        """Wait for a slot and the rate budget for one request of about ``estimated_tokens``.

        The caller must ``release()`` the permit (in a ``finally``) whether or not the request
        succeeded. Cancellation while waiting leaves nothing held.
        """
        await self._sem.acquire()
        try:
            while True:
                delay = self._paused_until - time.monotonic()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            if self._rpm is not None:
                await self._rpm.take(1)
            if self._tpm is not None and estimated_tokens > 0:
                await self._tpm.take(estimated_tokens)
        except BaseException:
            self._sem.release()
            raise
        self._in_flight += 1
        return Permit(self, estimated_tokens)

    def _release(self) -> None:
        self._in_flight -= 1
        self._sem.release()
