"""Provider keys (issue 10): a provider that needs a key and has none is refused when a job is
submitted, and a key that disappears while a job runs fails its requests at once, none sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from chatpgt.providers.client import ProviderPool
from chatpgt.providers.keys import missing_key
from chatpgt.providers.types import ChatRequest, ProviderError
from chatpgt.settings import ProviderConfig
from tests.conftest import FAKE_PROVIDER_KEY
from tests.datagen_helpers import job_body
from tests.fakes import control, stats

PROMPT = [{"role": "user", "content": "Write an essay on the history of bridges."}]


def _fake(providers_config: list[dict[str, object]], **overrides: Any) -> dict[str, ProviderConfig]:
    data = {**next(p for p in providers_config if p["name"] == "fake"), **overrides}
    return {"fake": ProviderConfig.model_validate(data)}


async def _jobs(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    resp = await api.get("/datagen/jobs")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ("generator", ["'openai'", "OPENAI_API_KEY"]),
        ("judge", ["'openai'", "OPENAI_API_KEY"]),
        ("judge-file", ["'fake-keyfile'", "/nonexistent/chatpgt-test/fake-provider.key"]),
    ],
)
async def test_keyless_provider_is_refused_at_submit(
    api: httpx.AsyncClient, clean_db: None, where: str, named: list[str]
) -> None:
    providers = {p["name"]: p for p in (await api.get("/providers")).json()}
    assert providers["openai"]["has_api_key"] is False
    assert providers["fake-keyfile"]["has_api_key"] is False
    body = job_body(["Keys at submit"])
    if where == "generator":
        body["generators"][1]["provider"] = "openai"
        body["generators"][1]["model"] = "gpt-4o-mini"
    elif where == "judge":
        body["judge"] = {"provider": "openai", "model": "gpt-4o-mini"}
    else:
        body["judge"] = {"provider": "fake-keyfile", "model": "judge"}

    resp = await api.post("/datagen/jobs", json=body)

    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    detail = resp.json()["detail"]
    for word in named:
        assert word in detail, detail
    assert await _jobs(api) == []  # nothing queued or written
    topics = (await api.get("/topics")).json()
    assert topics["items"] == []
    # The same body with the keyed provider is accepted: the refusal was about the key.
    ok = await api.post("/datagen/jobs", json=job_body(["Keys at submit"]))
    assert ok.status_code == 201, ok.text
    await api.post(f"/datagen/jobs/{ok.json()['id']}/cancel")


def test_missing_key_names_the_variable_or_the_file(tmp_path: Path) -> None:
    env = ProviderConfig(name="e", base_url="http://e/v1", api_key_env="CHATPGT_TEST_NO_SUCH_VAR")
    assert missing_key(env) == (
        "provider 'e' has no API key: the environment variable CHATPGT_TEST_NO_SUCH_VAR is not set"
    )
    secret = tmp_path / "key"
    keyed = ProviderConfig(name="f", base_url="http://f/v1", api_key_file=str(secret))
    assert missing_key(keyed) is not None and str(secret) in str(missing_key(keyed))
    secret.write_text("sk-file-" + "x" * 20 + "\n")
    assert missing_key(keyed) is None
    secret.write_text("\n")  # an empty file is no key
    assert missing_key(keyed) is not None
    # Nothing declared (a local server without auth) or a local model: no key needed.
    assert missing_key(ProviderConfig(name="g", base_url="http://g/v1")) is None
    assert missing_key(ProviderConfig(name="h", kind="local", api_key_env="NOPE_X")) is None


async def test_a_key_that_disappears_at_run_time_fails_at_once_without_a_request(
    fake: httpx.AsyncClient,
    providers_config: list[dict[str, object]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    await control(fake, require_key_env="FAKE_PROVIDER_KEY")
    secret = tmp_path / "fake.key"
    secret.write_text(FAKE_PROVIDER_KEY + "\n")
    monkeypatch.setenv("CHATPGT_TEST_VANISHING_KEY", FAKE_PROVIDER_KEY)
    req = ChatRequest(provider="fake", model="writer-a", messages=PROMPT)
    cases = [
        ({"api_key_env": "CHATPGT_TEST_VANISHING_KEY"}, "CHATPGT_TEST_VANISHING_KEY"),
        ({"api_key_env": None, "api_key_file": str(secret)}, str(secret)),
    ]
    for overrides, named in cases:
        async with ProviderPool(_fake(providers_config, **overrides)) as pool:
            assert (await pool.chat(req)).text  # the key is there: the request goes out
            sent = (await stats(fake))["total"]
            if "api_key_file" in overrides:
                secret.unlink()
            else:
                monkeypatch.delenv("CHATPGT_TEST_VANISHING_KEY")
            with pytest.raises(ProviderError) as caught:
                await pool.chat(req)
        err = caught.value
        assert err.retryable is False and err.attempts == 0 and err.status is None
        assert "'fake' has no API key" in err.message and named in err.message
        assert FAKE_PROVIDER_KEY not in err.message
        # No retries and no request at all: the fake server counted nothing more.
        assert (await stats(fake))["total"] == sent
    assert (await stats(fake))["by_outcome"] == {"ok": 2}
