"""Provider secrets never leak: not in API answers, exports, database rows, errors or log lines.

The unit tests pin down the redactor (chatpgt.redact) and where it is applied; the pool tests
make the real fake provider echo the key back in error bodies; the end-to-end test runs the real
API and a real Celery worker at DEBUG against a provider that echoes the key in some of its
errors, then greps every answer, export, table and log file for the key.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.providers.client import ProviderPool
from chatpgt.providers.types import ChatRequest, ProviderError
from chatpgt.redact import (
    REDACTED,
    RedactingFilter,
    add_secret,
    install_log_redaction,
    redact,
    register_provider_keys,
)
from chatpgt.settings import ProviderConfig, Settings
from tests import procs
from tests.conftest import FAKE_PROVIDER_KEY
from tests.datagen_helpers import job_body, wait_job

# The key, and the part of it no other text could contain by chance.
KEY_TAIL = FAKE_PROVIDER_KEY.removeprefix("sk-fake-")
NEEDLES = (FAKE_PROVIDER_KEY, KEY_TAIL)


def leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


# --- the redactor -----------------------------------------------------------------------------


def test_redact_removes_known_secrets_and_credential_shapes() -> None:
    # Not shaped like any credential: only knowing the value can catch it.
    secret = "tok_" + uuid.uuid4().hex
    assert redact(f"upstream said {secret}!") == f"upstream said {secret}!"
    add_secret(secret)
    assert redact(f"upstream said {secret}!") == f"upstream said {REDACTED}!"
    assert redact(f'{{"k": "{secret}{secret}"}}') == f'{{"k": "{REDACTED}{REDACTED}"}}'

    shaped = {
        "Authorization: Bearer abc.DEF-123_x": f"Authorization: Bearer {REDACTED}",
        "{'authorization': 'bearer eyJhbGciOi.J9'}": f"{{'authorization': 'bearer {REDACTED}'}}",
        "key sk-proj-AbCdEf0123456789xyz refused": f"key {REDACTED} refused",
        "GET https://g.example/v1/x?alt=json&key=AIzaSyA-b_c&n=1": (
            f"GET https://g.example/v1/x?alt=json&key={REDACTED}&n=1"
        ),
        "x-api-key: sk-ant-api03-zz": f"x-api-key: {REDACTED}",
        "'api-key': 'f00dcafe1234'": f"'api-key': '{REDACTED}'",
        "postgresql://chatpgt:hunter22@db:5432/x": f"postgresql://chatpgt:{REDACTED}@db:5432/x",
        "redis://:s3cret@redis:6379/0": f"redis://:{REDACTED}@redis:6379/0",
    }
    for raw, clean in shaped.items():
        assert redact(raw) == clean, raw
        assert redact(clean) == clean  # idempotent

    # Ordinary text that merely resembles a credential passes untouched.
    ordinary = (
        "the sk-learn docs, a task-runner, GET /pairs?limit=5&cursor=abc, redis://:**@redis:6379, "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/chatpgt, bearer of bad news"
    )
    assert redact(ordinary) == ordinary
    # Too short to be anyone's key: remembering it would mangle ordinary words.
    add_secret("letmein")
    assert redact("letmein") == "letmein"


def test_keys_are_known_once_resolved_from_env_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_key, file_key = "envkey-" + uuid.uuid4().hex, "filekey-" + uuid.uuid4().hex
    monkeypatch.setenv("CHATPGT_TEST_SECRET_KEY", env_key)
    (tmp_path / "k").write_text(file_key + "\n")
    configs = [
        ProviderConfig(name="e", base_url="http://e/v1", api_key_env="CHATPGT_TEST_SECRET_KEY"),
        ProviderConfig(name="f", base_url="http://f/v1", api_key_file=str(tmp_path / "k")),
    ]
    line = f"echo {env_key} and {file_key}"
    assert redact(line) == line  # declared, not yet resolved
    register_provider_keys(configs)
    assert redact(line) == f"echo {REDACTED} and {REDACTED}"
    # A declaration never shows the key, however it is printed.
    for cfg in configs:
        for shown in (repr(cfg), str(cfg), cfg.model_dump_json(), str(cfg.public())):
            assert env_key not in shown and file_key not in shown


def test_provider_error_messages_are_redacted_whoever_builds_them() -> None:
    err = ProviderError(
        f"HTTP 502 from 'x': proxy saw Authorization: Bearer {FAKE_PROVIDER_KEY}",
        retryable=True,
    )
    for shown in (err.message, str(err), repr(err)):
        assert not leaks(shown), shown
    assert f"Bearer {REDACTED}" in err.message


def test_declarations_with_inline_keys_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-inline-" + uuid.uuid4().hex
    with pytest.raises(ValidationError) as caught:
        ProviderConfig.model_validate({"name": "x", "base_url": "http://x/v1", "api_key": secret})
    assert secret not in str(caught.value) and "api_key_env" in str(caught.value)
    # Any invalid declaration: the error names the field, never the input around it.
    bad = f'[{{"name": "Bad Name", "base_url": "http://x/v1?key={secret}"}}]'
    monkeypatch.setenv("CHATPGT_PROVIDERS", bad)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert secret not in str(caught.value) and "name" in str(caught.value)


def _logger_with_two_handlers() -> tuple[logging.Logger, io.StringIO, io.StringIO]:
    """A logger that does not propagate (like uvicorn's and Celery's task logger), with two
    handlers of different formats."""
    log = logging.getLogger(f"chatpgt.test_secrets.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    plain, detailed = io.StringIO(), io.StringIO()
    for stream, fmt in ((plain, "%(message)s"), (detailed, "%(levelname)s %(name)s %(message)s")):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(fmt))
        log.addHandler(handler)
    return log, plain, detailed


def test_log_filter_redacts_messages_arguments_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, plain, detailed = _logger_with_two_handlers()
    last_resort = logging.lastResort
    assert last_resort is not None
    touched = [*logging.getLogger().handlers, last_resort]
    filters_before = {id(h): list(h.filters) for h in touched}
    try:
        assert install_log_redaction() >= 2
        assert install_log_redaction() >= 2  # idempotent: one filter per handler
        for handler in log.handlers:
            assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1

        headers = {"Authorization": f"Bearer {FAKE_PROVIDER_KEY}"}
        log.debug("sending %s", headers)
        log.info(f"key is {FAKE_PROVIDER_KEY}")
        try:
            try:
                raise ValueError(f"inner {FAKE_PROVIDER_KEY}")
            except ValueError as inner:
                raise RuntimeError(f"https://x.example/v1?key={KEY_TAIL}") from inner
        except RuntimeError:
            log.exception("request to %s failed", "x.example")
        # Arguments that do not fit the format: logging would print them raw on stderr.
        log.info("%d requests", FAKE_PROVIDER_KEY)
        # A record no handler takes goes to logging.lastResort (stderr): the API's root logger
        # under uvicorn has no handler, so a warning from chatpgt lands there.
        add_secret(known := "tok_" + uuid.uuid4().hex)
        last_resort.handle(
            log.makeRecord(log.name, logging.WARNING, __file__, 1, "flush: %s", (known,), None)
        )
    finally:
        for handler in touched:
            handler.filters[:] = filters_before[id(handler)]

    stderr = capsys.readouterr().err
    for out in (plain.getvalue(), detailed.getvalue(), stderr):
        assert not leaks(out), out
    assert f"flush: {REDACTED}" in stderr and known not in stderr
    out = detailed.getvalue()
    # The lines are still there, tracebacks included, with the secrets cut out.
    assert f"'Authorization': 'Bearer {REDACTED}'" in out
    assert f"key is {REDACTED}" in out
    assert "Traceback (most recent call last)" in out and "RuntimeError" in out
    assert f"inner {REDACTED}" in out and f"?key={REDACTED}" in out
    assert "unformattable log arguments" in out


# --- the pool against the fake provider echoing the key ----------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("echo_key_400", f"HTTP 400 from 'fake': Request refused; headers received: "
         f"{{'Authorization': 'Bearer {REDACTED}'}}"),
        ("echo_key_401", "HTTP 401 from 'fake': the API key ($FAKE_PROVIDER_KEY) was refused"),
        ("echo_key_500", f"HTTP 500 (Request refused; headers received: "
         f"{{'Authorization': 'Bearer {REDACTED}'}}) after 2 attempts"),
    ],
)  # fmt: skip
async def test_pool_errors_never_carry_a_key_the_provider_echoes(
    fake: httpx.AsyncClient,
    providers_config: list[dict[str, Any]],
    outcome: str,
    expected: str,
) -> None:
    data = {**next(p for p in providers_config if p["name"] == "fake"), "max_retries": 1}
    (await fake.post("/_control", json={"script": [outcome, outcome]})).raise_for_status()
    async with ProviderPool({"fake": ProviderConfig.model_validate(data)}) as pool:
        req = ChatRequest(
            provider="fake", model="writer-a", messages=[{"role": "user", "content": "Bridges"}]
        )
        with pytest.raises(ProviderError) as caught:
            await pool.chat(req)
    err = caught.value
    assert err.message == expected
    assert not leaks(f"{err.message} {err!s} {err!r}")
    seen = (await fake.get("/_stats")).json()["by_outcome"]
    assert seen.get(outcome) == (2 if outcome == "echo_key_500" else 1), seen


async def test_a_key_quoted_in_an_answer_is_redacted_from_its_text(
    fake: httpx.AsyncClient, providers_config: list[dict[str, Any]]
) -> None:
    data = next(p for p in providers_config if p["name"] == "fake")
    (await fake.post("/_control", json={"script": ["echo_key_content"]})).raise_for_status()
    async with ProviderPool({"fake": ProviderConfig.model_validate(data)}) as pool:
        req = ChatRequest(
            provider="fake", model="writer-a", messages=[{"role": "user", "content": "Keys"}]
        )
        result = await pool.chat(req)
    assert result.text.endswith(f"(request headers: Authorization: Bearer {REDACTED})")
    assert not leaks(result.text)
    assert (await fake.get("/_stats")).json()["by_outcome"].get("echo_key_content") == 1


# --- end to end: API + worker at DEBUG, then grep everything -----------------------------------


def _start_debug_services(env: dict[str, str], log_dir: Path) -> tuple[list[procs.Proc], str]:
    """The API and a datagen worker as tests/procs.py starts them, but logging at DEBUG."""
    port = procs.free_port()
    api = procs.Proc(
        "api-debug",
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
        + ["--port", str(port), "--log-level", "debug"],
        env,
        log_dir,
    )
    started = [api]
    try:
        base = f"http://127.0.0.1:{port}"
        procs.wait_http(f"{base}/healthz", api)
        worker = procs.Proc(
            "worker-datagen-debug",
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "datagen"]
            + ["-n", f"secrets-{time.monotonic_ns()}@%h", "--loglevel", "DEBUG"]
            + ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            + ["--pool", "prefork", "-c", "2"],
            env,
            log_dir,
        )
        started.append(worker)
        procs.wait_log(worker, "ready.")
    except BaseException:
        for proc in started:
            proc.stop()
        raise
    return started, base


@pytest.fixture
def debug_services(
    service_env: dict[str, str], log_dir: Path, fake_provider: str
) -> Iterator[tuple[list[procs.Proc], str]]:
    started, base = _start_debug_services(service_env, log_dir)
    yield started, base
    for proc in started:
        proc.stop()


async def _pages(api: httpx.AsyncClient, path: str, params: dict[str, Any]) -> list[str]:
    """Every page of a keyset-paginated list, as the raw bodies the API sent."""
    bodies, cursor = [], None
    while True:
        r = await api.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        bodies.append(r.text)
        cursor = r.json()["next_cursor"]
        if not cursor:
            return bodies


async def _table_dump(sm: async_sessionmaker[AsyncSession]) -> dict[str, list[str]]:
    """Every row of every table of the test database, each as JSON text."""
    async with sm() as s:
        names = (
            await s.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            )
        ).scalars()
        return {
            name: list(
                (await s.execute(text(f'SELECT row_to_json(t)::text FROM "{name}" t'))).scalars()
            )
            for name in list(names)
        }


def _read_logs(log_dir: Path) -> dict[str, str]:
    """Every log file the test processes of this session wrote so far, by file name."""
    return {p.name: p.read_text(errors="replace") for p in log_dir.glob("*.log")}


@pytest.mark.e2e
async def test_no_key_in_any_answer_export_row_or_log(
    clean_db: None,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake: httpx.AsyncClient,
    debug_services: tuple[list[procs.Proc], str],
    log_dir: Path,
) -> None:
    started, base = debug_services
    echoes = ["echo_key_400", "echo_key_500", "echo_key_401"]
    control = await fake.post(
        "/_control",
        json={
            "rate_5xx": 0.1,
            "rate_429": 0.05,
            "retry_after_s": 0.05,
            "rate_malformed_judge": 0.1,
            # The first requests (essays) get every echo, and a 5xx whatever the draws; two
            # essays come back (200) with the key quoted in their text.
            "script": [
                *echoes,
                "echo_key_400",
                "503",
                "writer:echo_key_content",
                "writer:echo_key_content",
            ],
        },
    )
    control.raise_for_status()
    answers: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as api:
        titles = [f"Secrets {uuid.uuid4().hex[:6]} {n}" for n in range(6)]
        created = await api.post("/datagen/jobs", json=job_body(titles, samples=2))
        assert created.status_code == 201, created.text
        answers.append(created.text)
        job_id = created.json()["id"]
        job = await wait_job(api, job_id)
        assert job["status"] == "succeeded", job

        for path in ("/datagen/jobs", f"/datagen/jobs/{job_id}", "/pairs/stats", "/providers"):
            r = await api.get(path)
            assert r.status_code == 200, r.text
            answers.append(r.text)
        for path in ("/providers/fake", "/datagen/jobs/999999999", "/essays/999999999"):
            answers.append((await api.get(path)).text)
        answers += await _pages(api, "/pairs", {"limit": 50})
        essays = await _pages(api, "/essays", {"job_id": job_id, "limit": 50})
        judgments = await _pages(api, "/judgments", {"job_id": job_id, "limit": 50})
        answers += essays + judgments
        failed_essays = [
            e for page in essays for e in httpx.Response(200, text=page).json()["items"]
            if e["status"] == "failed"
        ]  # fmt: skip
        for e in failed_essays:
            answers.append((await api.get(f"/essays/{e['id']}")).text)
        exports = [
            (await api.get("/pairs/export", params={"format": fmt})).text
            for fmt in ("jsonl", "csv")
        ]
        assert all(exports), "the exports are empty: the job made no pairs"
        answers += exports
        answers.append((await api.get("/healthz")).text)

    # The echo faults really happened, so the greps below are not vacuous.
    seen = (await fake.get("/_stats")).json()["by_outcome"]
    for outcome in (*echoes, "5xx", "echo_key_content"):
        assert seen.get(outcome, 0) >= 1, seen
    # An essay that quoted the key was stored, served and exported with the key redacted.
    texts = [
        e["text"] or "" for page in essays for e in httpx.Response(200, text=page).json()["items"]
    ]
    assert any(f"Authorization: Bearer {REDACTED}" in t for t in texts)
    # ...and were redacted where they surface: the failed essays' errors and the job's errors.
    errors = [e["error"] for e in failed_essays]
    assert any(f"'Authorization': 'Bearer {REDACTED}'" in (e or "") for e in errors), errors
    assert any("the API key ($FAKE_PROVIDER_KEY) was refused" in (e or "") for e in errors)
    assert any(REDACTED in str(e.get("error")) for e in job["errors"]), job["errors"]

    rows = await _table_dump(sessionmaker)
    assert {"datagen_jobs", "generations", "judgments", "pairs", "topics"} <= rows.keys()
    assert rows["generations"] and rows["judgments"] and rows["pairs"]

    for proc in started:
        proc.stop()  # flush and close: the logs below are complete
    logs = _read_logs(log_dir)
    worker_log = next(t for n, t in logs.items() if n.startswith("worker-datagen-debug"))
    api_log = next(t for n, t in logs.items() if n.startswith("api-debug"))
    # DEBUG really was on: the worker logged its provider requests, uvicorn its debug lines.
    assert "HTTP Request: POST" in worker_log and "DEBUG" in worker_log
    assert "GET /datagen/jobs" in api_log
    # Both processes knew the key and put the redacting filter on their log handlers.
    started_line = re.compile(r"secrets: [1-9]\d* provider key\(s\) .* filter on [1-9]\d* log")
    assert started_line.search(worker_log) and started_line.search(api_log)

    found = {
        **{f"answer {i}": leaks(a) for i, a in enumerate(answers)},
        **{f"table {n}": leaks("\n".join(r)) for n, r in rows.items()},
        **{f"log {n}": leaks(t) for n, t in logs.items()},
    }
    assert not {where: what for where, what in found.items() if what}
