"""Providers are declared without code: predefined ones, a TOML/JSON file, CHATPGT_PROVIDERS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from chatpgt.settings import Settings

TOML = """
[[providers]]
name = "vllm"
base_url = "http://gpu-box:8000/v1"
max_concurrency = 64
requests_per_minute = 1200
supports_json_mode = false
[providers.prices.llama-3-8b]
input_per_mtok = 0.05
output_per_mtok = 0.1

[[providers]]
name = "openai"
max_concurrency = 4
"""


def test_file_adds_providers_and_overrides_predefined_ones(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(TOML)
    configs = Settings(providers_file=path).provider_configs()
    assert {"openai", "openrouter", "vllm"} <= configs.keys()
    vllm = configs["vllm"]
    assert (vllm.max_concurrency, vllm.requests_per_minute, vllm.supports_json_mode) == (
        64,
        1200,
        False,
    )
    assert vllm.price_for("llama-3-8b").output_per_mtok == 0.1
    # overriding one field keeps the predefined rest
    assert configs["openai"].max_concurrency == 4
    assert configs["openai"].base_url == "https://api.openai.com/v1"
    assert configs["openai"].api_key_env == "OPENAI_API_KEY"


def test_environment_json_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps([{"name": "ollama", "base_url": "http://a/v1"}]))
    monkeypatch.setenv("CHATPGT_PROVIDERS_FILE", str(path))
    monkeypatch.setenv(
        "CHATPGT_PROVIDERS", json.dumps([{"name": "ollama", "base_url": "http://b/v1"}])
    )
    assert Settings().provider_configs()["ollama"].base_url == "http://b/v1"


def test_key_is_read_from_env_or_secret_file_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file-123456\n")
    monkeypatch.setenv("MY_KEY", "sk-from-env-abcdef")
    s = Settings(
        providers=[
            {"name": "a", "base_url": "http://a/v1", "api_key_env": "MY_KEY"},
            {"name": "b", "base_url": "http://b/v1", "api_key_file": str(secret)},
            {"name": "c", "base_url": "http://c/v1", "api_key_env": "UNSET_KEY_VAR"},
        ]
    )
    configs = s.provider_configs()
    assert configs["a"].api_key().get_secret_value() == "sk-from-env-abcdef"
    assert configs["b"].api_key().get_secret_value() == "sk-from-file-123456"
    assert configs["c"].api_key() is None
    shown = json.dumps([c.public() for c in configs.values()])
    assert "sk-from" not in shown and str(secret) not in shown
    assert [configs[n].public()["has_api_key"] for n in "abc"] == [True, True, False]


def test_bad_provider_declarations_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(providers=[{"name": "Bad Name!", "base_url": "http://x"}])
    with pytest.raises(ValidationError):
        Settings(providers=[{"name": "x", "max_concurrency": 0}])
    with pytest.raises(ValidationError):
        Settings(providers=[{"name": "x"}, {"name": "x"}])
