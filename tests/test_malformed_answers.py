"""Malformed provider answers: each one is a ProviderError with a short reason, never a crash.

The client runs against the real fake provider process, which breaks the body of a 200 answer on
demand (``script`` entries ``truncated_body``, ``no_choices``, ``no_message``,
``content_not_string``, ``non_utf8``, ``latin1_body``, ``huge_body``).
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import httpx
import orjson
import pytest

from chatpgt.datagen.judging import JudgeParseError, parse_verdict
from chatpgt.providers.answers import MalformedBody, parse_completion
from chatpgt.providers.client import ProviderPool
from chatpgt.providers.types import ChatRequest, ProviderError
from chatpgt.settings import ProviderConfig
from tests.fakes import control, stats

PROMPT = [{"role": "user", "content": "Write an essay on the history of bridges."}]
JUDGE_PROMPT = [
    {"role": "user", "content": "Which?\n<essay_a>\nOne.\n</essay_a>\n<essay_b>\nTwo.\n</essay_b>"}
]


def pool_for(providers_config: list[dict[str, object]], **overrides: Any) -> ProviderPool:
    data = dict(next(p for p in providers_config if p["name"] == "fake"))
    data.update(overrides)
    return ProviderPool({"fake": ProviderConfig.model_validate(data)})


def request(model: str = "writer-a") -> ChatRequest:
    messages = JUDGE_PROMPT if model.startswith("judge") else PROMPT
    return ChatRequest(provider="fake", model=model, messages=messages, max_tokens=300)


async def failure(pool: ProviderPool, model: str = "writer-a") -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await pool.chat(request(model))
    return caught.value


# --- the fake server's body faults are what they say ---------------------------------------


async def test_fake_server_breaks_bodies_as_asked(fake: httpx.AsyncClient) -> None:
    kinds = ["truncated_body", "no_choices", "no_message", "content_not_string", "non_utf8"]
    await control(fake, script=[*kinds, "latin1_body"])
    body = {"model": "writer-a", "messages": PROMPT}
    raws = [(await fake.post("/v1/chat/completions", json=body)).content for _ in range(6)]
    truncated, no_choices, no_message, not_string, non_utf8, latin1 = raws
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(truncated)
    assert truncated.startswith(b'{"id":"chatcmpl-')
    assert "choices" not in orjson.loads(no_choices)
    choice = orjson.loads(no_message)["choices"][0]
    assert "message" not in choice and choice["text"].startswith("writer-a:")
    assert isinstance(orjson.loads(not_string)["choices"][0]["message"]["content"], dict)
    assert b"\xff\xfe" in non_utf8
    with pytest.raises(UnicodeDecodeError):
        non_utf8.decode()
    assert b"Caf\xe9" in latin1  # Latin-1 bytes, declared UTF-8
    by_outcome = (await stats(fake))["by_outcome"]
    assert by_outcome == {k: 1 for k in [*kinds, "latin1_body"]}


async def test_fake_server_streams_a_huge_body_and_scopes_scripts(fake: httpx.AsyncClient) -> None:
    # A scoped entry waits for its kind of model: the writer request passes it by.
    await control(fake, huge_body_mb=2, script=["judge:huge_body"])
    writer = await fake.post("/v1/chat/completions", json={"model": "writer-a", "messages": PROMPT})
    assert writer.json()["choices"][0]["message"]["content"].startswith("writer-a:")
    judge = await fake.post(
        "/v1/chat/completions", json={"model": "judge", "messages": JUDGE_PROMPT}
    )
    assert "content-length" not in judge.headers  # streamed in chunks
    content = judge.json()["choices"][0]["message"]["content"]
    assert len(content) == 2 * 1024 * 1024
    assert (await stats(fake))["by_outcome"] == {"ok": 1, "huge_body": 1}
    bad = await fake.post("/_control", json={"script": ["nobody:huge_body"]})
    assert bad.status_code == 400


# --- the client turns each into a typed error with a reason --------------------------------


async def test_truncated_body_is_retried_like_a_dropped_connection(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    await control(fake, script=["truncated_body"])
    async with pool_for(providers_config) as pool:
        result = await pool.chat(request())
    assert result.attempts == 2 and result.text.startswith("writer-a:")

    await control(fake, script=["truncated_body"] * 3)
    async with pool_for(providers_config, max_retries=2) as pool:
        err = await failure(pool)
    assert err.retryable is True and err.attempts == 3 and err.status == 200
    assert "body is not valid JSON (truncated at byte " in err.message
    assert err.message.endswith("after 3 attempts")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("no_choices", "not a chat completion: no 'choices'"),
        ("no_message", "not a chat completion: choices[0] has no 'message'"),
        ("content_not_string", "message.content is a JSON object, not a string"),
        ("invalid_body", "body is not valid JSON (starts with '<html>"),
    ],
)
@pytest.mark.parametrize("model", ["writer-a", "judge"])
async def test_wrong_shapes_fail_at_once(
    fake: httpx.AsyncClient,
    providers_config: list[dict[str, object]],
    kind: str,
    reason: str,
    model: str,
) -> None:
    await control(fake, script=[kind])
    async with pool_for(providers_config) as pool:
        err = await failure(pool, model)
        # the pool is still good for the next request
        assert (await pool.chat(request(model))).attempts == 1
    assert err.retryable is False and err.attempts == 1 and err.status == 200
    assert err.message == f"malformed response from 'fake' (HTTP 200): {reason}" or (
        kind == "invalid_body" and reason in err.message
    )
    assert (await stats(fake))["total"] == 2


@pytest.mark.parametrize(("kind", "byte"), [("non_utf8", "0xff"), ("latin1_body", "0xe9")])
async def test_non_utf8_is_retried_once_then_failed(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]], kind: str, byte: str
) -> None:
    await control(fake, script=[kind])
    async with pool_for(providers_config) as pool:
        assert (await pool.chat(request())).attempts == 2
        await control(fake, script=[kind, kind, kind])
        err = await failure(pool)
    assert err.retryable is False and err.attempts == 2  # once, not max_retries (6) times
    assert f"body is not valid UTF-8 (byte {byte} at offset " in err.message
    assert (await stats(fake))["total"] == 4


async def test_huge_body_stops_at_the_cap_without_buffering_it(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    await control(fake, huge_body_mb=50, script=["huge_body", "judge:huge_body"])
    cap = 1024 * 1024
    async with pool_for(providers_config, max_response_bytes=cap) as pool:
        tracemalloc.start()
        try:
            started = time.perf_counter()
            err = await failure(pool)
            judge_err = await failure(pool, "judge")
            elapsed = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The connection was dropped, not reused half-read: the next answer is whole.
        assert (await pool.chat(request())).text.startswith("writer-a:")
    for e in (err, judge_err):
        assert e.retryable is False and e.attempts == 1
        assert e.message == (
            "malformed response from 'fake' (HTTP 200): response body over 1048576 bytes "
            "(max_response_bytes)"
        )
    # 50 MB were offered; what this process held stays near the 1 MiB cap.
    assert peak < 12 * 1024 * 1024, peak
    assert elapsed < 20, elapsed
    assert (await stats(fake))["by_outcome"] == {"huge_body": 2, "ok": 1}


async def test_default_cap_and_declared_length(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    assert ProviderConfig(name="x").max_response_bytes == 8 * 1024 * 1024
    # An ordinary essay (a few KB, with Content-Length) over a tiny cap is refused unread.
    async with pool_for(providers_config, max_response_bytes=1024) as pool:
        err = await failure(pool)
    assert "response body over 1024 bytes" in err.message and err.attempts == 1


def test_parse_completion_reasons() -> None:
    def reason(raw: bytes) -> tuple[str, str]:
        with pytest.raises(MalformedBody) as caught:
            parse_completion(raw)
        return caught.value.kind, caught.value.reason

    def body(content: Any) -> bytes:
        return orjson.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})

    assert reason(b"") == ("truncated", "empty body")
    assert reason(b'{"choices": [{"mess') == (
        "truncated",
        "body is not valid JSON (truncated at byte 19)",
    )
    assert reason(body("a\x00b")) == ("encoding", "message.content contains NUL characters")
    assert reason(b'{"choices": [{"message": {"content": "\\ud800"}}]}')[0] == "encoding"
    assert reason(b"[1, 2]") == ("shape", "body is a JSON list, not an object")
    assert reason(b'{"choices": []}')[0] == "shape"
    assert reason(body(12))[1] == "message.content is a JSON number, not a string"
    # a null content is an empty answer (the caller decides), not a malformed one
    assert parse_completion(body(None))[2] == ""


@pytest.mark.parametrize(
    "content",
    [
        '{"winner": "A", "reasoning": "x", "confidence": 1e400}',
        '{"winner": "A", "reasoning": "x", "confidence": NaN}',
        '{"winner": "A", "reasoning": "x", "confidence": -Infinity}',
        "[" * 100_000,
    ],
)
def test_judge_answers_that_used_to_crash_the_parser(content: str) -> None:
    # OverflowError, ValueError and RecursionError escaped before: the job died, not the row.
    with pytest.raises(JudgeParseError):
        parse_verdict(content)
