"""The fake OpenAI-compatible server: what other tests rely on it to do.

These tests talk to the real server process (session fixture ``fake_provider``) over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from chatpgt.testing.fake_content import judge_verdict
from tests.conftest import FAKE_PROVIDER_KEY
from tests.fakes import control

ESSAYS = [
    "Rivers carve valleys over millennia, patient as any sculptor.",
    "A river is a road that moves; towns grew where it slowed.",
    "Water remembers nothing, yet every delta records its journey.",
    "The Thames froze in 1683 and Londoners held a fair on the ice.",
    "Floods ruin and renew: the Nile's silt fed an empire.",
    "Bridges are arguments with rivers that rivers eventually win.",
]


async def complete(
    client: httpx.AsyncClient, model: str, content: str, **extra: Any
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return await client.post("/v1/chat/completions", json=body)


def judge_prompt(a: str, b: str) -> str:
    return f"Which essay is better?\n<essay_a>\n{a}\n</essay_a>\n<essay_b>\n{b}\n</essay_b>"


async def judge(client: httpx.AsyncClient, a: str, b: str) -> dict[str, Any]:
    response = await complete(client, "judge", judge_prompt(a, b))
    assert response.status_code == 200
    return dict(json.loads(response.json()["choices"][0]["message"]["content"]))


def strict_verdict(content: str) -> dict[str, Any]:
    """The strictest reading a judge parser could make; raises on anything malformed."""
    data = json.loads(content)
    if not isinstance(data, dict) or set(data) != {"winner", "reasoning", "confidence"}:
        raise ValueError(f"wrong fields: {data!r}")
    if data["winner"] not in ("A", "B"):
        raise ValueError(f"bad winner: {data['winner']!r}")
    if not isinstance(data["confidence"], int) or not 1 <= data["confidence"] <= 10:
        raise ValueError(f"bad confidence: {data['confidence']!r}")
    return data


async def test_models_lists_judge_and_writers(fake: httpx.AsyncClient) -> None:
    data = (await fake.get("/v1/models")).json()
    ids = {m["id"] for m in data["data"]}
    assert {"judge", "writer-a"} <= ids


async def test_generator_writes_an_essay_with_usage(fake: httpx.AsyncClient) -> None:
    prompt = "Write an essay on rivers.\nKeep it short."
    first = (await complete(fake, "writer-a", prompt)).json()
    second = (await complete(fake, "writer-a", prompt)).json()

    text = first["choices"][0]["message"]["content"]
    assert text.startswith("writer-a: Write an essay on rivers.")
    assert 150 <= len(text.split()) <= 400
    assert first["usage"]["completion_tokens"] == len(text.split())
    assert first["usage"]["prompt_tokens"] == len(prompt) // 4
    assert first["choices"][0]["finish_reason"] == "stop"
    assert text != second["choices"][0]["message"]["content"], "two samples must differ"


async def test_generator_stops_at_max_tokens(fake: httpx.AsyncClient) -> None:
    data = (await complete(fake, "writer-b", "Write about bridges", max_tokens=40)).json()
    text = data["choices"][0]["message"]["content"]
    assert len(text.split()) == 40 == data["usage"]["completion_tokens"]
    assert data["choices"][0]["finish_reason"] == "length"


async def test_judge_is_deterministic_and_order_consistent(fake: httpx.AsyncClient) -> None:
    winners = set()
    for i, a in enumerate(ESSAYS):
        for b in ESSAYS[i + 1 :]:
            forward = await judge(fake, a, b)
            again = await judge(fake, a, b)
            backward = await judge(fake, b, a)
            assert forward == again
            # The same essay wins whichever slot it is shown in, with the same confidence.
            assert {forward["winner"], backward["winner"]} == {"A", "B"}
            assert forward["confidence"] == backward["confidence"]
            assert 1 <= forward["confidence"] <= 10
            winners.add(forward["winner"])
    assert winners == {"A", "B"}, "a judge that always says A is not judging"


def test_verdict_function_matches_both_orders() -> None:
    for a in ESSAYS:
        for b in ESSAYS:
            if a != b:
                w1, c1 = judge_verdict(a, b)
                w2, c2 = judge_verdict(b, a)
                assert {w1, w2} == {"A", "B"} and c1 == c2


async def test_position_bias_makes_order_flips(fake: httpx.AsyncClient) -> None:
    await control(fake, position_bias=1.0)
    a, b = ESSAYS[0], ESSAYS[1]
    assert (await judge(fake, a, b))["winner"] == "A"
    assert (await judge(fake, b, a))["winner"] == "A"


async def test_malformed_judge_output_is_malformed(fake: httpx.AsyncClient) -> None:
    await control(fake, rate_malformed_judge=1.0)
    contents = []
    for _ in range(5):
        response = await complete(fake, "judge", judge_prompt(ESSAYS[0], ESSAYS[1]))
        assert response.status_code == 200
        contents.append(response.json()["choices"][0]["message"]["content"])
    for content in contents:
        with pytest.raises((ValueError, TypeError)):
            strict_verdict(content)
    assert len(set(contents)) == 5, "the malformed kinds should rotate"
    assert any('"confidence": 42' in c for c in contents)
    assert any('"winner": "C"' in c for c in contents)
    stats = (await fake.get("/_stats")).json()
    assert stats["by_outcome"] == {"malformed": 5}


async def test_judge_without_essay_tags_is_a_bad_request(fake: httpx.AsyncClient) -> None:
    response = await complete(fake, "judge", "Which is better, A or B?")
    assert response.status_code == 400


async def test_invalid_request_is_400(fake: httpx.AsyncClient) -> None:
    response = await complete(fake, "writer-a", "hello", temperature=5)
    assert response.status_code == 400
    assert "temperature" in response.json()["error"]["message"]


async def test_429_carries_retry_after_headers(fake: httpx.AsyncClient) -> None:
    await control(fake, rate_429=1.0, retry_after_s=1.25)
    response = await complete(fake, "writer-a", "hello")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["retry-after-ms"] == "1250"


async def test_5xx_and_empty_faults(fake: httpx.AsyncClient) -> None:
    await control(fake, rate_5xx=1.0)
    statuses = {(await complete(fake, "writer-a", "hello")).status_code for _ in range(30)}
    assert statuses <= {500, 502, 503} and len(statuses) >= 2

    await control(fake, rate_5xx=0.0, rate_empty=1.0)
    data = (await complete(fake, "writer-a", "hello")).json()
    assert data["choices"][0]["message"]["content"] == ""
    assert data["usage"]["completion_tokens"] == 0


async def test_script_forces_outcomes_in_order(fake: httpx.AsyncClient) -> None:
    await control(fake, script=["503", "429", "empty"])
    statuses = [(await complete(fake, "writer-a", "x")).status_code for _ in range(4)]
    assert statuses == [503, 429, 200, 200]
    stats = (await fake.get("/_stats")).json()
    assert stats["by_outcome"] == {"5xx": 1, "429": 1, "empty": 1, "ok": 1}
    assert stats["total"] == 4 and stats["by_model"] == {"writer-a": 4}


async def test_timeout_hangs_until_hang_s(fake: httpx.AsyncClient) -> None:
    await control(fake, rate_timeout=1.0, hang_s=5.0)
    with pytest.raises(httpx.ReadTimeout):
        await fake.post(
            "/v1/chat/completions",
            json={"model": "writer-a", "messages": [{"role": "user", "content": "x"}]},
            timeout=httpx.Timeout(0.3),
        )


async def test_latency_is_applied(fake: httpx.AsyncClient) -> None:
    await control(fake, latency_ms=300)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await complete(fake, "writer-a", "x")).status_code == 200
    assert loop.time() - started >= 0.3


async def test_require_key(fake: httpx.AsyncClient) -> None:
    await control(fake, require_key_env="FAKE_PROVIDER_KEY")
    assert (await complete(fake, "writer-a", "x")).status_code == 401
    wrong = {"Authorization": "Bearer sk-wrong"}
    body = {"model": "writer-a", "messages": [{"role": "user", "content": "x"}]}
    assert (await fake.post("/v1/chat/completions", json=body, headers=wrong)).status_code == 401
    right = {"Authorization": f"Bearer {FAKE_PROVIDER_KEY}"}
    assert (await fake.post("/v1/chat/completions", json=body, headers=right)).status_code == 200
    stats = (await fake.get("/_stats")).json()
    assert stats["by_outcome"] == {"unauthorized": 2, "ok": 1}


async def test_control_rejects_unknown_fields_and_reset_restores(fake: httpx.AsyncClient) -> None:
    assert (await fake.post("/_control", json={"rate_5xx": 2})).status_code == 400
    assert (await fake.post("/_control", json={"nonsense": 1})).status_code == 400
    assert (await control(fake, rate_5xx=0.5))["rate_5xx"] == 0.5
    await complete(fake, "writer-a", "x")
    reset = (await fake.post("/_control/reset")).json()
    assert reset["rate_5xx"] == 0.0
    assert (await fake.get("/_stats")).json()["total"] == 0


async def test_logprobs_when_asked(fake: httpx.AsyncClient) -> None:
    data = (await complete(fake, "writer-a", "x", logprobs=True, max_tokens=5)).json()
    tokens = data["choices"][0]["logprobs"]["content"]
    assert len(tokens) == 5 and all(t["logprob"] <= 0 for t in tokens)


async def test_sustains_a_thousand_concurrent_requests(fake: httpx.AsyncClient) -> None:
    """The datagen benchmarks need ~1,000 requests in flight against one fake server."""
    await control(fake, latency_ms=1000)
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1200))
    async with httpx.AsyncClient(
        base_url=str(fake.base_url), transport=transport, timeout=30.0
    ) as client:
        body = {"model": "writer-a", "messages": [{"role": "user", "content": "x"}]}
        responses = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body) for _ in range(1000))
        )
    assert all(r.status_code == 200 for r in responses)
    stats = (await fake.get("/_stats")).json()
    assert stats["max_concurrent"] >= 900
