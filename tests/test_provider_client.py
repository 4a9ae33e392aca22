"""ProviderPool and the limiter against the real fake provider process (no mocked HTTP)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import redis.asyncio

from chatpgt.providers.client import ProviderPool, parse_retry_after
from chatpgt.providers.limits import ProviderLimiter
from chatpgt.providers.types import ChatRequest, ProviderError
from chatpgt.settings import ProviderConfig
from tests.conftest import FAKE_PROVIDER_KEY, REDIS_TEST_URL
from tests.fakes import control, stats
from tests.procs import free_port

PROMPT = [{"role": "user", "content": "Write an essay on the history of bridges."}]


def configs(
    providers_config: list[dict[str, object]], **fake_overrides: Any
) -> dict[str, ProviderConfig]:
    """The session's provider declarations, with some fields of ``fake`` replaced."""
    out = {}
    for raw in providers_config:
        data = dict(raw)
        if data["name"] == "fake":
            data.update(fake_overrides)
        cfg = ProviderConfig.model_validate(data)
        out[cfg.name] = cfg
    return out


def request(model: str = "writer-a", **kwargs: Any) -> ChatRequest:
    return ChatRequest(provider="fake", model=model, messages=PROMPT, **kwargs)


async def test_chat_returns_text_tokens_and_cost(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    async with ProviderPool(configs(providers_config)) as pool:
        result = await pool.chat(request(max_tokens=300))
        cheaper = await pool.chat(request("writer-b", max_tokens=300))

    assert result.text.startswith("writer-a: Write an essay on the history of bridges.")
    assert result.completion_tokens == len(result.text.split()) > 0
    assert result.prompt_tokens == len(PROMPT[0]["content"]) // 4
    assert result.attempts == 1 and result.finish_reason in ("stop", "length")
    # writer-a costs $1 in / $2 out per million tokens in the session's configuration.
    expected = (Decimal(result.prompt_tokens) * 1 + Decimal(result.completion_tokens) * 2) / 10**6
    assert result.cost_usd == expected
    expected_b = (
        Decimal(cheaper.prompt_tokens) * Decimal("0.5") + Decimal(cheaper.completion_tokens)
    ) / 10**6
    assert cheaper.cost_usd == expected_b
    assert pool.cost("fake", "judge", 1000, 1000) == Decimal("0.009")


async def test_estimate_cost_is_an_upper_bound(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    async with ProviderPool(configs(providers_config)) as pool:
        req = request(max_tokens=120)
        result = await pool.chat(req)
        assert result.cost_usd <= pool.estimate_cost(req)
        assert pool.estimate_cost(req) < pool.estimate_cost(request(max_tokens=1200))


async def test_json_mode_only_where_supported(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    async with ProviderPool(configs(providers_config)) as pool:
        await pool.chat(request(json_mode=True))
        await pool.chat(request(json_mode=False))
    assert (await stats(fake))["json_mode"] == 1
    async with ProviderPool(configs(providers_config, supports_json_mode=False)) as pool:
        await pool.chat(request(json_mode=True))
    assert (await stats(fake))["json_mode"] == 1


async def test_key_is_sent_and_a_wrong_or_missing_key_fails_at_once(
    fake: httpx.AsyncClient,
    providers_config: list[dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await control(fake, require_key_env="FAKE_PROVIDER_KEY")
    async with ProviderPool(configs(providers_config)) as pool:
        assert (await pool.chat(request())).text

    wrong_key = "sk-wrong-" + uuid.uuid4().hex
    monkeypatch.setenv("CHATPGT_TEST_WRONG_KEY", wrong_key)
    for overrides in ({"api_key_env": "CHATPGT_TEST_WRONG_KEY"}, {"api_key_env": None}):
        async with ProviderPool(configs(providers_config, **overrides)) as pool:
            with pytest.raises(ProviderError) as caught:
                await pool.chat(request())
        err = caught.value
        assert err.retryable is False and err.status == 401 and err.attempts == 1
        shown = f"{err} {err.message} {err!r} {err.args}"
        assert FAKE_PROVIDER_KEY not in shown and wrong_key not in shown
        assert "401" in err.message

    assert (await stats(fake))["by_outcome"] == {"ok": 1, "unauthorized": 2}


async def test_429_is_retried_after_retry_after_ms(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    # Retry-After says 1 s (rounded up); retry-after-ms says 400 ms and must win.
    await control(fake, retry_after_s=0.4, script=["429"])
    async with ProviderPool(configs(providers_config)) as pool:
        started = time.perf_counter()
        result = await pool.chat(request())
        waited = time.perf_counter() - started
    assert result.attempts == 2
    # backoff_base_s is 0.02 s: only the header can explain a wait this long. (That
    # retry-after-ms wins over Retry-After is test_parse_retry_after's; no upper bound on a
    # wall clock here, which a loaded machine would break.)
    assert waited >= 0.4
    assert result.latency_ms >= 400
    assert (await stats(fake))["by_outcome"] == {"429": 1, "ok": 1}


async def test_5xx_is_retried_then_succeeds(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    await control(fake, script=["503", "502", "500"])
    async with ProviderPool(configs(providers_config)) as pool:
        result = await pool.chat(request())
    assert result.attempts == 4 and result.text
    assert (await stats(fake))["by_outcome"] == {"5xx": 3, "ok": 1}


async def test_persistent_5xx_gives_up_after_max_retries(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    await control(fake, rate_5xx=1.0)
    async with ProviderPool(configs(providers_config)) as pool:
        with pytest.raises(ProviderError) as caught:
            await pool.chat(request())
    err = caught.value
    max_retries = pool.configs["fake"].max_retries
    assert err.retryable is True and err.attempts == max_retries + 1
    assert err.status in (500, 502, 503)
    assert f"after {max_retries + 1} attempts" in err.message and "HTTP 50" in err.message
    assert (await stats(fake))["total"] == max_retries + 1


async def test_timeouts_are_retried(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    fast = {"timeout_s": 0.3, "connect_timeout_s": 0.3, "max_retries": 2}
    await control(fake, hang_s=5.0, script=["timeout"])
    async with ProviderPool(configs(providers_config, **fast)) as pool:
        result = await pool.chat(request())
        assert result.attempts == 2 and result.latency_ms >= 300

        await control(fake, rate_timeout=1.0)
        with pytest.raises(ProviderError) as caught:
            await pool.chat(request())
    assert caught.value.retryable is True and caught.value.attempts == 3
    assert "timeout" in caught.value.message


async def test_bad_request_is_not_retried(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    async with ProviderPool(configs(providers_config)) as pool:
        with pytest.raises(ProviderError) as caught:
            await pool.chat(request(temperature=5.0))
    err = caught.value
    assert err.retryable is False and err.status == 400 and err.attempts == 1
    assert "temperature" in err.message  # the server's own explanation is kept
    assert (await stats(fake))["total"] == 1


async def test_malformed_200_body_is_not_retried(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    await control(fake, script=["invalid_body"])
    async with ProviderPool(configs(providers_config)) as pool:
        with pytest.raises(ProviderError) as caught:
            await pool.chat(request())
    assert caught.value.retryable is False and caught.value.status == 200
    assert (await stats(fake))["total"] == 1


async def test_empty_content_is_returned_as_empty_text(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    await control(fake, rate_empty=1.0)
    async with ProviderPool(configs(providers_config)) as pool:
        result = await pool.chat(request())
    assert result.text == "" and result.attempts == 1 and result.completion_tokens == 0


async def test_unknown_provider_and_unstarted_pool(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    pool = ProviderPool(configs(providers_config))
    # Prices work from configuration alone; sending needs a started pool.
    assert pool.cost("fake", "writer-a", 10**6, 0) == Decimal(1)
    with pytest.raises(RuntimeError):
        await pool.chat(request())
    async with pool:
        with pytest.raises(ProviderError) as caught:
            await pool.chat(ChatRequest(provider="nope", model="x", messages=PROMPT))
    assert caught.value.retryable is False and "'nope'" in caught.value.message
    with pytest.raises(ProviderError):
        pool.cost("nope", "x", 1, 1)


async def test_unreachable_server_is_retried_then_reported(
    providers_config: list[dict[str, object]],
) -> None:
    closed_port = free_port()  # nothing listens there
    dead = {"base_url": f"http://127.0.0.1:{closed_port}/v1", "max_retries": 2}
    async with ProviderPool(configs(providers_config, **dead)) as pool:
        with pytest.raises(ProviderError) as caught:
            await pool.chat(request())
    assert caught.value.retryable is True and caught.value.attempts == 3
    assert caught.value.message.startswith("transport error")


async def test_non_http_base_url_fails_at_once(providers_config: list[dict[str, object]]) -> None:
    async with ProviderPool(configs(providers_config, base_url="ftp://example.org")) as pool:
        with pytest.raises(ProviderError) as caught:
            await pool.chat(request())
    assert caught.value.retryable is False and caught.value.attempts == 1


async def test_logprobs_are_passed_through(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    async with ProviderPool(configs(providers_config)) as pool:
        result = await pool.chat(request(max_tokens=8, extra={"logprobs": True}))
        plain = await pool.chat(request(max_tokens=8))
    assert result.logprobs is not None and len(result.logprobs) == 8
    assert plain.logprobs is None


async def test_concurrency_limit_holds(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    await control(fake, latency_ms=50)
    async with ProviderPool(configs(providers_config, max_concurrency=8)) as pool:
        results = await asyncio.gather(*(pool.chat(request(max_tokens=20)) for _ in range(80)))
        assert pool.limiter("fake").in_flight == 0
    assert len(results) == 80
    observed = (await stats(fake))["max_concurrent"]
    assert 4 <= observed <= 8


async def test_a_thousand_requests_in_flight(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    """The connection pool must not cap the fan-out (aiohttp's own default is 100)."""
    await control(fake, latency_ms=1000)
    # A generous timeout: on a loaded machine the fake server may answer 1,000 late.
    many = configs(providers_config, max_concurrency=1000, timeout_s=30.0, connect_timeout_s=30.0)
    async with ProviderPool(many) as pool:
        results = await asyncio.gather(*(pool.chat(request(max_tokens=20)) for _ in range(1000)))
    assert all(r.attempts == 1 for r in results)
    assert (await stats(fake))["max_concurrent"] >= 900


async def test_rpm_limit_spaces_requests(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    async def burst(pool: ProviderPool) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(pool.chat(request(max_tokens=10)) for _ in range(12)))
        return time.perf_counter() - started

    async with ProviderPool(configs(providers_config)) as pool:
        unlimited = await burst(pool)
    # 300 a minute = 5 a second with a one-second burst: 5 at once, then one every 0.2 s.
    async with ProviderPool(configs(providers_config, requests_per_minute=300)) as pool:
        limited = await burst(pool)
    # The 12th request cannot leave before 7 x 0.2 s (less a little for the clock); how fast
    # the unlimited burst is depends on the machine, so it is only compared.
    assert limited >= 1.3 and unlimited < limited


async def test_tpm_estimate_is_corrected_after_the_request() -> None:
    # 600k tokens a minute = 10k a second; burst_s=0.2 makes the bucket hold 2,000 tokens.
    limiter = ProviderLimiter(max_concurrency=4, tokens_per_minute=600_000, burst_s=0.2)

    async def timed_acquire(tokens: int, actual: int) -> float:
        started = time.perf_counter()
        async with await limiter.acquire(tokens) as permit:
            await permit.settle(actual)
        return time.perf_counter() - started

    # Lower bounds only (a limiter must never let tokens through early); "no wait" is read as
    # less than the 0.2 s a refill would take.
    assert await timed_acquire(2000, 2000) < 0.15
    # The bucket is empty: the next 2,000 tokens need 0.2 s to refill.
    assert await timed_acquire(2000, 0) >= 0.15
    # That request used nothing and was refunded, so the bucket is full again.
    assert await timed_acquire(2000, 2000) < 0.15
    # A request bigger than the bucket waits for a full bucket, then runs the bucket into debt.
    assert await timed_acquire(6000, 6000) >= 0.15
    # The bucket is at -4,000: 100 more tokens wait for 4,100 to refill (0.41 s).
    assert await timed_acquire(100, 100) >= 0.38


async def test_concurrency_permits_are_released_on_cancel() -> None:
    limiter = ProviderLimiter(max_concurrency=1)
    held = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # one turn of the loop: the task starts and blocks on the slot
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    held.release()  # idempotent: a second release must not free a second slot
    again = await asyncio.wait_for(limiter.acquire(), 1.0)
    assert limiter.in_flight == 1
    blocked = asyncio.create_task(limiter.acquire())  # the one slot is taken: it must wait
    await asyncio.sleep(0)
    assert not blocked.done()
    blocked.cancel()
    again.release()


async def test_redis_limiter_is_shared_between_limiters() -> None:
    """Two limiters on one Redis key stand for two worker processes of one provider."""
    client = redis.asyncio.Redis.from_url(REDIS_TEST_URL)
    key = f"chatpgt:test-limits:{uuid.uuid4().hex}"

    async def run(limiters: list[ProviderLimiter]) -> float:
        started = time.perf_counter()

        async def one(limiter: ProviderLimiter) -> None:
            (await limiter.acquire()).release()

        await asyncio.gather(*(one(limiters[i % 2]) for i in range(12)))
        return time.perf_counter() - started

    try:
        shared = [
            ProviderLimiter(max_concurrency=8, requests_per_minute=300, redis=client, key=key)
            for _ in range(2)
        ]
        separate = [ProviderLimiter(max_concurrency=8, requests_per_minute=300) for _ in range(2)]
        # Separately, each has 5 at once and needs 0.2 s for its sixth; shared, 12 need 1.4 s.
        apart, together = await run(separate), await run(shared)
        assert together >= 1.3 and apart < together
    finally:
        async for k in client.scan_iter(match=f"{key}:rpm*"):
            await client.delete(k)
        await client.aclose()


def test_parse_retry_after() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "3"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    from_date = parse_retry_after(httpx.Headers({"retry-after": later}))
    assert from_date is not None and 28 <= from_date <= 30
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "x", "retry-after": "-1"})) is None
    assert parse_retry_after(httpx.Headers({})) is None
