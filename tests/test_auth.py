"""API keys: the API under uvicorn with CHATPGT_AUTH=required, the app in-process with a chosen
peer address (loopback or not) for the ``auto`` rule, and the ``chatpgt keys`` commands as a
subprocess, all against the test Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.main import create_app
from chatpgt.auth import service
from chatpgt.auth.models import ApiKey
from chatpgt.auth.schemas import ApiKeyCreate
from chatpgt.datagen.models import DatagenJob
from chatpgt.settings import Settings
from chatpgt.topics.models import Topic
from tests import procs

PROBLEM = "application/problem+json"
CACHE_TTL_S = 1.0
JOB = {
    "topics": {"titles": ["On keys"]},
    "generators": [
        {"provider": "fake", "model": "writer-a"},
        {"provider": "fake", "model": "writer-b"},
    ],
    "judge": {"provider": "fake", "model": "judge"},
}
# (method, path, body) of routes that need a key; POSTs would write if let through.
GUARDED = [
    ("GET", "/pairs", None),
    ("GET", "/topics", None),
    ("GET", "/providers", None),
    ("POST", "/topics", {"titles": ["Written without a key"]}),
    ("POST", "/datagen/jobs", JOB),
]


async def new_key(sessionmaker: async_sessionmaker[AsyncSession], scope: str, name: str) -> str:
    async with sessionmaker() as session:
        created = await service.create_key(session, ApiKeyCreate(name=name, scope=scope))  # type: ignore[arg-type]
        await session.commit()
    return created.key.get_secret_value()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def count(session: AsyncSession, model: type[Any]) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["status"] == status and body["detail"]
    return body


@pytest.fixture(scope="module")
def secured(service_env: dict[str, str], log_dir: Path) -> Iterator[tuple[str, procs.Proc]]:
    """The API under uvicorn with keys required from everyone (it listens on 127.0.0.1)."""
    env = {
        **service_env,
        "CHATPGT_AUTH": "required",
        "CHATPGT_AUTH_CACHE_TTL_S": str(CACHE_TTL_S),
    }
    proc, base = procs.start_api(env, log_dir)
    yield base, proc
    proc.stop()


@pytest.fixture
async def secured_api(secured: tuple[str, procs.Proc]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=secured[0], timeout=30.0) as client:
        yield client


@asynccontextmanager
async def in_process(peer: str, **overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app with its lifespan, called over ASGI as if from ``peer``."""
    app = create_app(Settings(**overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client, app


# --- required --------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
async def test_no_key_is_a_401_and_writes_nothing(
    secured_api: httpx.AsyncClient,
    session: AsyncSession,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    answer = await secured_api.request(method, path, json=body)
    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"] == "Bearer"
    assert await count(session, Topic) == 0
    assert await count(session, DatagenJob) == 0


async def test_without_a_key_nothing_else_is_looked_at(
    secured_api: httpx.AsyncClient, session: AsyncSession
) -> None:
    """The key is checked before routing, body parsing and validation: malformed JSON, a body
    that breaks the schema, an unknown route and a body over the size cap are all a 401."""
    headers = {"content-type": "application/json"}
    for method, path, content in (
        ("POST", "/topics", b'{"titles": ["unterminated'),
        ("POST", "/datagen/jobs", b'{"topics": 42}'),
        ("GET", "/no/such/route", b""),
        ("POST", "/topics", b"x" * (9 << 20)),
    ):
        answer = await secured_api.request(method, path, content=content, headers=headers)
        assert_problem(answer, 401)
    assert await count(session, Topic) == 0


async def test_health_and_the_schema_need_no_key(secured_api: httpx.AsyncClient) -> None:
    assert (await secured_api.get("/healthz")).json() == {"status": "ok"}
    assert (await secured_api.get("/openapi.json")).status_code == 200


async def test_start_up_says_keys_are_required(
    service_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        async with in_process("127.0.0.1", auth="required"):
            pass
    assert "API keys are required on every route but the health check" in caplog.text
    assert "chatpgt keys create" in caplog.text


async def test_read_key_reads_but_cannot_write(
    secured_api: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key(sessionmaker, "read", "dashboard")
    for path in ("/pairs", "/topics", "/pairs/stats", "/providers"):
        answer = await secured_api.get(path, headers=bearer(key))
        assert answer.status_code == 200, (path, answer.text)
    for path, body in (
        ("/topics", {"titles": ["Read keys write nothing"]}),
        ("/datagen/jobs", JOB),
    ):
        answer = await secured_api.post(path, json=body, headers=bearer(key))
        problem = assert_problem(answer, 403)
        assert problem["required_scope"] == "write"
        assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert await count(session, Topic) == 0
    assert await count(session, DatagenJob) == 0


async def test_write_key_writes(
    secured_api: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key(sessionmaker, "write", "ci")
    answer = await secured_api.post(
        "/topics", json={"titles": ["Written with a key"]}, headers=bearer(key)
    )
    assert answer.status_code == 200, answer.text
    listed = await secured_api.get("/topics", headers=bearer(key))
    assert [t["title"] for t in listed.json()["items"]] == ["Written with a key"]
    assert await count(session, Topic) == 1


async def test_wrong_secret_malformed_key_and_other_schemes_are_401(
    secured_api: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key(sessionmaker, "write", "ci")
    prefix = service.key_prefix(key)
    assert prefix is not None
    forged = f"cpgt_{prefix}_{'A' * 43}"
    for headers in (
        bearer(forged),
        bearer(key[:-1]),
        bearer("not-a-key"),
        bearer(key.replace("cpgt_", "xxxx_", 1)),
    ):
        answer = await secured_api.post("/topics", json={"titles": ["x"]}, headers=headers)
        assert_problem(answer, 401)
        assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    answer = await secured_api.get("/pairs", headers={"Authorization": f"Basic {key}"})
    assert_problem(answer, 401)
    assert await count(session, Topic) == 0


async def test_revoked_key_is_refused_within_the_cache_ttl(
    secured_api: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key(sessionmaker, "read", "laptop")
    assert (await secured_api.get("/pairs", headers=bearer(key))).status_code == 200
    prefix = service.key_prefix(key)
    assert prefix is not None
    _, revoked_now = await service.revoke_key(session, prefix)
    await session.commit()
    assert revoked_now
    await asyncio.sleep(CACHE_TTL_S + 0.5)
    answer = await secured_api.get("/pairs", headers=bearer(key))
    assert_problem(answer, 401)


async def test_only_the_hash_is_stored(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await new_key(sessionmaker, "write", "ci")
    secret = key.split("_", 2)[2]
    dump = (await session.execute(text("SELECT row_to_json(k)::text FROM api_keys k"))).scalar_one()
    assert secret not in dump and key not in dump
    row = (await session.execute(select(ApiKey))).scalar_one()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(f"cpgt_{row.prefix}_")
    assert len(secret) >= 43  # 256 bits, URL-safe base64


# --- the cache and last_used_at, in-process ----------------------------------------------------


async def test_a_key_is_looked_up_once_per_ttl_not_per_request(
    service_env: dict[str, str],
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await new_key(sessionmaker, "read", "load")
    async with in_process("10.1.2.3", auth="required", auth_cache_ttl_s=0.5) as (client, app):
        verifier = app.state.access.verifier
        answers = await asyncio.gather(
            *(client.get("/pairs/stats", headers=bearer(key)) for _ in range(40))
        )
        assert {a.status_code for a in answers} == {200}
        assert verifier.lookups == 1  # concurrent first requests shared one lookup
        first_use = (await session.execute(select(ApiKey.last_used_at))).scalar_one()
        assert first_use is not None
        await asyncio.sleep(0.6)
        assert (await client.get("/pairs/stats", headers=bearer(key))).status_code == 200
        assert verifier.lookups == 2
        # A use within the minute does not rewrite last_used_at.
        session.expire_all()
        assert (await session.execute(select(ApiKey.last_used_at))).scalar_one() == first_use


# --- auto: open to loopback only ------------------------------------------------------------


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1"])
async def test_auto_on_loopback_lets_loopback_clients_in(
    service_env: dict[str, str],
    session: AsyncSession,
    peer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        async with in_process(peer, auth="auto", api_host="127.0.0.1") as (client, _):
            assert (await client.get("/pairs")).status_code == 200
            answer = await client.post("/topics", json={"titles": ["From this machine"]})
            assert answer.status_code == 200, answer.text
            # A key that is sent is checked even here.
            assert_problem(await client.get("/pairs", headers=bearer("cpgt_nope")), 401)
    assert "may call the API without a key" in caplog.text
    assert await count(session, Topic) == 1


@pytest.mark.parametrize(
    ("peer", "api_host"),
    [
        ("10.1.2.3", "127.0.0.1"),  # uvicorn --host 0.0.0.0 by hand, remote client
        ("192.168.1.5", "localhost"),
        ("127.0.0.1", "0.0.0.0"),  # configured beyond localhost: keys for everyone
    ],
)
async def test_auto_needs_a_key_off_loopback(
    service_env: dict[str, str],
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    peer: str,
    api_host: str,
) -> None:
    async with in_process(peer, auth="auto", api_host=api_host) as (client, _):
        for method, path, body in GUARDED:
            assert_problem(await client.request(method, path, json=body), 401)
        assert (await client.get("/healthz")).status_code == 200
        key = await new_key(sessionmaker, "write", "remote")
        answer = await client.post("/topics", json={"titles": ["Remote"]}, headers=bearer(key))
        assert answer.status_code == 200, answer.text
    assert await count(session, Topic) == 1
    assert await count(session, DatagenJob) == 0


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"):
        assert service.is_loopback(host), host
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.com", "", None, "testclient"):
        assert not service.is_loopback(host), host


async def test_openapi_declares_the_bearer_scheme(service_env: dict[str, str]) -> None:
    async with in_process("127.0.0.1") as (client, _):
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    health = schema["paths"]["/healthz"]["get"]
    assert "security" not in health and "401" not in health["responses"]
    pairs = schema["paths"]["/pairs"]["get"]
    assert pairs["security"] == [{"ApiKey": []}]
    assert "401" in pairs["responses"] and "403" not in pairs["responses"]
    assert {"401", "403"} <= set(schema["paths"]["/topics"]["post"]["responses"])


# --- chatpgt keys ------------------------------------------------------------------------------


def chatpgt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatpgt.cli", *args],
        env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=procs.ROOT,
    )


async def test_cli_create_list_use_and_revoke(
    service_env: dict[str, str],
    secured: tuple[str, procs.Proc],
    session: AsyncSession,
) -> None:
    base = secured[0]
    created = await asyncio.to_thread(
        chatpgt, service_env, "keys", "create", "--name", "ci runner", "--scope", "write"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout.count("\n") == 1 and key.startswith("cpgt_")
    prefix = service.key_prefix(key)
    assert prefix is not None and f"prefix {prefix}" in created.stderr
    assert key not in created.stderr

    listed = await asyncio.to_thread(chatpgt, service_env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ci runner" in listed.stdout and prefix in listed.stdout and "write" in listed.stdout
    secret = key.split("_", 2)[2]
    assert secret not in listed.stdout
    row = (await session.execute(select(ApiKey))).scalar_one()
    assert row.key_hash not in listed.stdout

    # The CLI's API commands send the key from --api-key or CHATPGT_API_KEY.
    keyless = await asyncio.to_thread(chatpgt, service_env, "--api", base, "pairs", "stats")
    assert keyless.returncode == 1
    assert "--api-key" in keyless.stderr and "Traceback" not in keyless.stderr
    with_env = await asyncio.to_thread(
        chatpgt, {**service_env, "CHATPGT_API_KEY": key}, "--api", base, "topics", "add", "CLI"
    )
    assert with_env.returncode == 0, with_env.stderr
    with_option = await asyncio.to_thread(
        chatpgt, service_env, "--api", base, "--api-key", key, "pairs", "stats"
    )
    assert with_option.returncode == 0, with_option.stderr

    revoked = await asyncio.to_thread(chatpgt, service_env, "keys", "revoke", prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked key {row.id}" in revoked.stdout
    again = await asyncio.to_thread(chatpgt, service_env, "keys", "revoke", str(row.id))
    assert again.returncode == 0 and "revoked already" in again.stdout
    unknown = await asyncio.to_thread(chatpgt, service_env, "keys", "revoke", "abcdefabcdef")
    assert unknown.returncode == 1 and "no API key" in unknown.stderr

    as_json = await asyncio.to_thread(chatpgt, service_env, "keys", "list", "--json")
    (shown,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert shown["id"] == row.id and shown["revoked_at"] is not None
    assert set(shown) == {
        "id",
        "name",
        "scope",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    await asyncio.sleep(CACHE_TTL_S + 0.5)
    after = await asyncio.to_thread(
        chatpgt, service_env, "--api", base, "--api-key", key, "pairs", "stats"
    )
    assert after.returncode == 1 and "revoked" in after.stderr


def test_cli_refuses_a_bad_scope(service_env: dict[str, str]) -> None:
    done = chatpgt(service_env, "keys", "create", "--name", "x", "--scope", "admin")
    assert done.returncode == 2
    assert done.stdout == ""
