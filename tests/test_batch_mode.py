"""Batch mode (chatpgt.datagen.batches): generators and judges in ``"mode": "batch"`` go through
the fake server's OpenAI Batch API (/v1/files, /v1/batches) at the batch price, with the real
API, Postgres, Redis and a Celery worker process; the job waits between looks without holding
the worker (CHATPGT_BATCH_POLL_S is 1 s in tests)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.api_client.requests import build_job_request
from chatpgt.datagen.models import Generation, Judgment
from tests import procs
from tests.datagen_helpers import job_body, wait_job
from tests.fakes import control, stats

pytestmark = pytest.mark.e2e

TITLES = ["On batches", "On waiting", "On half prices"]


def batch_body(titles: list[str], **kwargs: Any) -> dict[str, Any]:
    body = job_body(titles, **kwargs)
    for g in body["generators"]:
        g["mode"] = "batch"
    body["judge"]["mode"] = "batch"
    return body


async def _submit(api: httpx.AsyncClient, body: dict[str, Any]) -> int:
    created = await api.post("/datagen/jobs", json=body)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


async def _until(fake: httpx.AsyncClient, field: str, at_least: int, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while (await stats(fake)).get(field, 0) < at_least:
        assert time.monotonic() < deadline, await stats(fake)
        await asyncio.sleep(0.1)


PROVIDERS = ["fake", "fake-anthropic"]  # OpenAI's Batch API, Anthropic's Message Batches


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_batch_job_end_to_end_at_half_price(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
    provider: str,
) -> None:
    await control(fake, batch_delay_s=1.0)
    job = await wait_job(api, await _submit(api, batch_body(TITLES, provider=provider)))
    assert job["status"] == "succeeded" and job["outcome"] == "produced", job
    assert job["generations"]["done"] == 6 and job["judgments"]["done"] == 6
    assert job["pairs"] >= 1
    seen = await stats(fake)
    # Nothing online; one batch for the essays, one for the verdicts (both orders together);
    # no request answered twice.
    assert seen["total"] == 0, seen
    assert seen["batches"] == 2 and seen["batch_requests"] == 12 and seen["batch_item_max"] == 1
    finished = "ended" if provider == "fake-anthropic" else "completed"
    assert [b["remote_status"] for b in job["batches"]] == [finished, finished]
    assert [b["requests"] for b in job["batches"]] == [6, 6]
    assert all(b["status"] == "done" and b["remote_batch_id"] for b in job["batches"])
    # Half price (batch_discount 0.5): what was saved equals what was paid.
    assert job["cost_usd"] > 0
    assert job["saved_usd"] == pytest.approx(job["cost_usd"], rel=1e-3)
    essays = (await session.scalars(select(Generation))).all()
    assert all(g.status == "succeeded" and g.text and g.saved_usd > 0 for g in essays)

    # Submitted again, it is answered from the response cache: no new batch.
    again = await wait_job(api, await _submit(api, batch_body(TITLES, provider=provider)))
    assert again["status"] == "succeeded" and again["cost_usd"] == 0, again
    assert again["cache_hits"] == 12 and again["batches"] == []
    assert (await stats(fake))["batches"] == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_failed_items_are_retried_and_expired_ones_resubmitted(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
    provider: str,
) -> None:
    # The first batch expires half done; then 30% of each batch's requests fail with a 500.
    await control(fake, batch_delay_s=0.5, batch_expire=1.0)
    job_id = await _submit(api, batch_body(TITLES, samples=2, provider=provider))
    await _until(fake, "batches", 1)
    await control(fake, batch_expire=0.0, batch_fail_rate=0.3)
    job = await wait_job(api, job_id, within_s=90)
    assert job["status"] in ("succeeded", "failed"), job
    remote = [b["remote_status"] for b in job["batches"]]
    assert len(remote) >= 3, job["batches"]
    if provider == "fake":  # an expired message batch ends "ended", its items "expired"
        assert remote[0] == "expired"
    else:
        assert job["batches"][0]["counts"]["expired"] == 5
    seen = await stats(fake)
    assert seen["total"] == 0 and seen["batch_item_max"] == 1, seen
    rows = [
        *(await session.scalars(select(Generation))).all(),
        *(await session.scalars(select(Judgment))).all(),
    ]
    assert all(r.status in ("succeeded", "failed", "skipped") for r in rows)
    # An item fails only after two batches failed it, with the provider's words.
    for r in rows:
        if r.status == "failed":
            assert "inside the batch" in (r.error or ""), r.error
    if provider == "fake-anthropic":
        assert all(r.status == "failed" or r.cost_usd > 0 for r in rows)
    assert sum(r.status == "succeeded" for r in rows) > len(rows) // 2


async def test_cancel_cancels_the_remote_batch(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    await control(fake, batch_delay_s=60.0)
    job_id = await _submit(api, batch_body(TITLES))
    await _until(fake, "batches", 1)
    assert (await api.post(f"/datagen/jobs/{job_id}/cancel")).status_code in (200, 202)
    job = await wait_job(api, job_id, within_s=60)
    assert job["status"] == "cancelled", job
    assert job["batches"][0]["remote_status"] == "cancelled"
    remote = (await fake.get("/v1/batches")).json()["data"]
    assert [b["status"] for b in remote] == ["cancelled"]
    # The fake had finished half the batch when it was cancelled: those essays are kept.
    assert job["batches"][0]["counts"]["completed"] == 3
    assert job["generations"]["done"] == 3 and job["generations"]["cancelled"] == 3
    assert job["cost_usd"] > 0 and job["judgments"]["done"] == 0


async def test_a_rejected_batch_file_fails_its_items_with_the_reason(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    await control(fake, batch_reject=1.0)
    job = await wait_job(api, await _submit(api, batch_body(TITLES[:1])))
    assert job["status"] == "failed" and job["outcome"] == "nothing_produced", job
    assert job["generations"]["failed"] == 2
    assert job["batches"][0]["remote_status"] == "failed"
    errors = [g.error for g in (await session.scalars(select(Generation))).all()]
    assert all("rejected" in (e or "") for e in errors), errors


async def test_budget_cap_in_batch_mode(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    # The batch price of one essay's upper bound (300 tokens at $2/M out, halved) is ~$0.0003:
    # a budget of $0.001 holds about three of the six essays.
    body = batch_body(TITLES, budget_usd=0.001)
    job = await wait_job(api, await _submit(api, body))
    assert job["status"] in ("succeeded", "failed"), job
    assert job["stop_reason"] == "budget_exhausted" or job["generations"]["skipped"] > 0, job
    assert 0 < job["generations"]["done"] < 6
    assert job["cost_usd"] <= 0.001
    assert sum(b["requests"] for b in job["batches"]) < 12


@pytest.mark.parametrize(
    ("provider", "words"),
    [
        ("local", "kind local"),
        ("fake-slow", "supports_batch"),
    ],
)
async def test_batch_mode_without_a_batch_api_is_a_400(
    api: httpx.AsyncClient, session: AsyncSession, provider: str, words: str
) -> None:
    body = job_body(["On refusals"])
    body["generators"][0].update(provider=provider, mode="batch")
    refused = await api.post("/datagen/jobs", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert words in refused.json()["detail"]
    assert (await api.get("/datagen/jobs")).json()["items"] == []


async def test_cli_datagen_run_batch(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
    service_env: dict[str, str],
    api_url: str,
) -> None:
    await control(fake, batch_delay_s=0.5)
    args = ["-g", "fake:writer-a", "-g", "fake:writer-b", "-j", "fake:judge", "--batch"]
    env = {**service_env, "COLUMNS": "200", "NO_COLOR": "1"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chatpgt.cli", "--api", api_url, "datagen", "run"]
        + ["-t", "On the command line", *args],
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job = (await api.get("/datagen/jobs")).json()["items"][0]
    assert job["status"] == "succeeded"
    assert {g["mode"] for g in job["request"]["generators"]} == {"batch"}
    assert job["request"]["judge"]["mode"] == "batch"
    assert "saved" in done.stdout
    assert (await stats(fake))["batches"] == 2


def test_job_request_batch_and_cache_flags() -> None:
    request = build_job_request(
        titles=["x"], generators=["fake:a", "fake:b"], judge="fake:j", batch=True, cache=False
    )
    body = request.model_dump(mode="json", exclude_unset=True)
    assert [g["mode"] for g in body["generators"]] == ["batch", "batch"]
    assert body["judge"]["mode"] == "batch" and body["cache"] is False
    builtin = build_job_request(
        titles=["x"], generators=["fake:a:2"], judge="style_classifier", batch=True
    )
    assert "mode" not in builtin.model_dump(exclude_unset=True)["judge"]
    assert "cache" not in builtin.model_dump(exclude_unset=True)


async def test_items_failed_in_a_batch_asked_online_when_the_job_says_so(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    await control(fake, batch_delay_s=0.3, batch_fail_rate=1.0)  # every batch request fails
    body = {**batch_body(TITLES[:2]), "batch_failures": "online"}
    job = await wait_job(api, await _submit(api, body))
    assert job["status"] == "succeeded" and job["outcome"] == "produced", job
    seen = await stats(fake)
    # The essays' batch failed whole, so did the verdicts': each request then asked online.
    assert seen["batches"] == 2 and seen["batch_requests"] == 0, seen
    assert seen["total"] == job["generations"]["total"] + job["judgments"]["total"] == 8
    assert job["saved_usd"] == 0 and job["cost_usd"] > 0
