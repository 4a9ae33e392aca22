"""Providers of kind ``anthropic``: the Messages API through ProviderPool (headers, ``system``,
stop reasons, usage, retries, redaction, cost), and a datagen job end to end, against the
fake server's ``POST /v1/messages`` (a real process; no mocked HTTP)."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from chatpgt.providers.client import ProviderPool
from chatpgt.providers.types import ChatRequest, ProviderError
from chatpgt.settings import ProviderConfig
from tests import procs
from tests.conftest import FAKE_PROVIDER_KEY
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import control, stats

SYSTEM = "You write short essays in plain words."
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Write an essay on the history of bridges."},
]


def _configs(providers_config: list[dict[str, object]]) -> dict[str, ProviderConfig]:
    return {
        str(c["name"]): ProviderConfig.model_validate(c)
        for c in providers_config
        if c["name"] == "fake-anthropic"
    }


def _request(model: str = "writer-a", **kwargs: object) -> ChatRequest:
    return ChatRequest(provider="fake-anthropic", model=model, messages=MESSAGES, **kwargs)  # type: ignore[arg-type]


async def test_messages_api_text_usage_stop_reason_and_cost(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    # The fake refuses any key but ours, read from x-api-key (not Authorization).
    await control(fake, require_key_env="FAKE_PROVIDER_KEY")
    async with ProviderPool(_configs(providers_config)) as pool:
        result = await pool.chat(
            _request(max_tokens=1000, temperature=0.7, top_p=1.0, extra={"seed": 3})
        )
        short = await pool.chat(_request(max_tokens=5))

    assert result.text.startswith("writer-a: Write an essay on the history of bridges.")
    assert result.finish_reason == "stop" and result.attempts == 1
    assert result.completion_tokens == len(result.text.split()) > 0
    # usage.input_tokens: the fake counts the system prompt too (it went in `system`).
    chars = len(SYSTEM) + len(MESSAGES[1]["content"])
    assert result.prompt_tokens == chars // 4
    expected = (Decimal(result.prompt_tokens) * 1 + Decimal(result.completion_tokens) * 2) / 10**6
    assert result.cost_usd == expected
    assert short.finish_reason == "length"  # stop_reason max_tokens
    # The system prompt went in the top-level field: the fake saw it there, first.
    seen = (await fake.get("/_requests")).json()
    assert seen[0]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert seen[0]["messages"][1]["role"] == "user"
    assert (await stats(fake))["by_status"] == {"200": 2}


async def test_a_wrong_key_is_refused_and_never_shown(
    fake: httpx.AsyncClient,
    providers_config: list[dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await control(fake, require_key_env="FAKE_PROVIDER_KEY")
    monkeypatch.setenv("FAKE_PROVIDER_KEY", "sk-ant-wrong-" + "x" * 20)
    async with ProviderPool(_configs(providers_config)) as pool:
        with pytest.raises(ProviderError) as refused:
            await pool.chat(_request(max_tokens=50))
    assert refused.value.status == 401
    assert "API key ($FAKE_PROVIDER_KEY) was refused" in refused.value.message
    assert "sk-ant-wrong" not in refused.value.message


async def test_retries_and_redaction_as_for_openai(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    async with ProviderPool(_configs(providers_config)) as pool:
        await control(fake, script=["503", "429"], retry_after_s=0.05)
        result = await pool.chat(_request(max_tokens=50))
        assert result.attempts == 3 and result.text

        # A server that quotes our x-api-key in its error: the message keeps none of it.
        await control(fake, script=["echo_key_400"])
        with pytest.raises(ProviderError) as echoed:
            await pool.chat(_request(max_tokens=50))
        assert echoed.value.status == 400 and not echoed.value.retryable
        assert FAKE_PROVIDER_KEY not in echoed.value.message
        assert "[REDACTED]" in echoed.value.message

        # A 200 that is not a message fails at once with a reason.
        await control(fake, script=["no_choices"])
        with pytest.raises(ProviderError) as shape:
            await pool.chat(_request(max_tokens=50))
        assert "not an Anthropic message" in shape.value.message
        assert shape.value.attempts == 1

        # A truncated body is retried like a dropped connection.
        await control(fake, script=["truncated_body"])
        assert (await pool.chat(_request(max_tokens=50))).attempts == 2


@pytest.mark.e2e
async def test_datagen_job_on_anthropic(
    api: httpx.AsyncClient,
    session: object,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    titles = ["On bridges", "On rivers"]
    body = job_body(titles, provider="fake-anthropic")
    created = await api.post("/datagen/jobs", json=body)
    assert created.status_code == 201, created.text
    job = await wait_job(api, created.json()["id"])
    assert job["status"] == "succeeded" and job["outcome"] == "produced", job
    assert job["generations"]["done"] == 4 and job["judgments"]["done"] == 4
    assert job["pairs"] >= 1 and job["cost_usd"] > 0
    assert (await stats(fake))["by_status"] == {"200": 8}  # the judges' JSON came back valid
    essays = (await api.get("/essays", params={"job_id": job["id"]})).json()["items"]
    assert {e["finish_reason"] for e in essays} <= {"stop", "length"}
    assert all(e["cost_usd"] > 0 for e in essays)


@pytest.mark.e2e
async def test_probability_judge_on_anthropic_is_refused_at_submit(
    api: httpx.AsyncClient, session: object
) -> None:
    body = job_body(["On bridges"], provider="fake-anthropic")
    body["judge"]["method"] = "ab_probability"
    refused = await api.post("/datagen/jobs", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "ab_probability" in refused.json()["detail"]
    assert (await api.get("/datagen/jobs")).json()["items"] == []
