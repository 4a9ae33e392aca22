"""Shared fixtures: a fresh migrated Postgres database, Redis, and real processes.

Everything runs against real services: Postgres and Redis on 127.0.0.1, the API under uvicorn,
Celery worker processes, and the fake OpenAI-compatible provider server from chatpgt.testing.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.db.session import make_engine, make_sessionmaker
from chatpgt.models import Base
from chatpgt.settings import get_settings
from tests import procs

PG_ADMIN_URL = os.environ.get(
    "CHATPGT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("CHATPGT_TEST_REDIS", "redis://127.0.0.1:6379/11")
FAKE_PROVIDER_KEY = "sk-fake-" + uuid.uuid4().hex  # must never show up in any output


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def alembic_config(url: str) -> Config:
    cfg = Config(str(procs.ROOT / "alembic.ini"))
    cfg.attributes["configure_logger"] = False
    cfg.cmd_opts = None
    cfg.set_main_option("script_location", str(procs.ROOT / "migrations"))
    cfg.attributes["database_url"] = url
    return cfg


@pytest.fixture(scope="session")
def log_dir() -> Path:
    """Logs of the child processes; kept after the run (pytest prunes its own tmp dirs)."""
    return Path(tempfile.mkdtemp(prefix="chatpgt-test-logs-"))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A new database, migrated to head with Alembic, dropped at the end of the session."""
    name = f"chatpgt_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_psycopg(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    command.upgrade(alembic_config(url), "head")
    yield url
    get_settings.cache_clear()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def fake_provider_port() -> int:
    return procs.free_port()


@pytest.fixture(scope="session")
def providers_config(fake_provider_port: int) -> list[dict[str, object]]:
    base = f"http://127.0.0.1:{fake_provider_port}/v1"
    common = {
        "base_url": base,
        "api_key_env": "FAKE_PROVIDER_KEY",
        "timeout_s": 3.0,
        "connect_timeout_s": 2.0,
        "max_retries": 6,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.5,
        "prices": {
            "writer-a": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            "writer-b": {"input_per_mtok": 0.5, "output_per_mtok": 1.0},
            "judge": {"input_per_mtok": 3.0, "output_per_mtok": 6.0},
        },
    }
    return [
        {"name": "fake", "max_concurrency": 64, "supports_batch": True, **common},
        {"name": "fake-slow", "max_concurrency": 4, "requests_per_minute": 600, **common},
        # The fault drill (tests/test_fault_drill.py): a short timeout, so that 5% of requests
        # hanging costs seconds, not minutes; quick backoff; more retries for 35% faulty answers.
        {
            "name": "fake-drill",
            "max_concurrency": 64,
            **common,
            "timeout_s": 1.0,
            "connect_timeout_s": 1.0,
            "max_retries": 8,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.1,
        },
        # The fake's Anthropic Messages API (POST /v1/messages), same models and faults.
        {
            "name": "fake-anthropic",
            "kind": "anthropic",
            "max_concurrency": 64,
            "supports_batch": True,
            **common,
        },
        # A declared provider whose secret file does not exist: refused at submit (issue 10).
        {
            "name": "fake-keyfile",
            "max_concurrency": 4,
            **common,
            "api_key_env": None,
            "api_key_file": "/nonexistent/chatpgt-test/fake-provider.key",
        },
    ]


@pytest.fixture(scope="session")
def service_env(
    database_url: str,
    providers_config: list[dict[str, object]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Environment for every child process, and for settings read in this process."""
    values = {
        "CHATPGT_DATABASE_URL": database_url,
        "CHATPGT_BROKER_URL": REDIS_TEST_URL,
        # A key prefix of its own, so concurrent test runs on one Redis never share a queue.
        "CHATPGT_BROKER_KEY_PREFIX": f"chatpgt-test-{uuid.uuid4().hex[:8]}:",
        "CHATPGT_PROVIDERS": json.dumps(providers_config),
        # Workers share provider rate limits through Redis, as in production.
        "CHATPGT_RATE_LIMIT_REDIS_URL": REDIS_TEST_URL,
        "CHATPGT_RATE_LIMIT_KEY_PREFIX": f"chatpgt-test-{uuid.uuid4().hex[:8]}:limits",
        "CHATPGT_ARTIFACTS_DIR": str(tmp_path_factory.mktemp("artifacts")),
        # Every API and worker process writes its metric samples here (multiprocess mode).
        "CHATPGT_METRICS_DIR": str(tmp_path_factory.mktemp("metrics")),
        "CHATPGT_JOB_LEASE_S": "4",
        "CHATPGT_JOB_HEARTBEAT_S": "1",
        # A job waiting on provider batches looks again this often (the fake's take ~1 s).
        "CHATPGT_BATCH_POLL_S": "1",
        "CHATPGT_BROKER_VISIBILITY_TIMEOUT_S": "3600",
        "FAKE_PROVIDER_KEY": FAKE_PROVIDER_KEY,
        # The predefined openai provider has no key in tests, whatever the shell has.
        "OPENAI_API_KEY": "",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    os.environ.update(values)
    get_settings.cache_clear()
    return {**os.environ, **values}


@pytest.fixture(scope="session")
def fake_provider(
    service_env: dict[str, str], log_dir: Path, fake_provider_port: int
) -> Iterator[str]:
    """The fake OpenAI-compatible server; yields its control base URL (http://host:port)."""
    proc = procs.start_fake_provider(service_env, log_dir, fake_provider_port)
    yield f"http://127.0.0.1:{fake_provider_port}"
    proc.stop()


@pytest.fixture
async def fake(fake_provider: str) -> AsyncIterator[httpx.AsyncClient]:
    """A control client on the fake provider; its profile and stats are reset around each test."""
    async with httpx.AsyncClient(base_url=fake_provider, timeout=10.0) as client:
        (await client.post("/_control/reset")).raise_for_status()
        yield client
        await client.post("/_control/reset")


@pytest.fixture(scope="module")
def datagen_worker(
    service_env: dict[str, str], log_dir: Path, fake_provider: str
) -> Iterator[procs.Proc]:
    """A real Celery worker on the datagen queue, for one test module."""
    proc = procs.start_worker(service_env, log_dir, "datagen", concurrency=2)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def api_url(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    proc, base = procs.start_api(service_env, log_dir)
    yield base
    proc.stop()


@pytest.fixture
async def api(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
async def sessionmaker(
    service_env: dict[str, str],
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(service_env["CHATPGT_DATABASE_URL"], pool_size=4)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def clean_db(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Empty every table before the test (tests share one migrated database)."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with sessionmaker() as session:
        await session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await session.commit()


@pytest.fixture
async def session(
    clean_db: None, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as s:
        yield s
