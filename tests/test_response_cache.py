"""The response cache (chatpgt.datagen.cache): a job submitted again is answered from the
database at $0 without one provider request; ``"cache": false`` asks the provider again.

Real API, Postgres, Redis, a Celery worker process and the fake provider server.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.cache import cache_key
from chatpgt.datagen.models import CachedResponse, Generation, Judgment
from chatpgt.providers.types import ChatRequest
from chatpgt.settings import ProviderConfig
from tests import procs
from tests.datagen_helpers import job_body, wait_job

pytestmark = pytest.mark.e2e

TITLES = ["On caching", "On paying twice", "On batches"]


async def _essays(session: AsyncSession, job_id: int) -> dict[tuple[int, str, int], Generation]:
    rows = await session.scalars(select(Generation).where(Generation.job_id == job_id))
    return {(g.topic_id, g.generator_key, g.sample_index): g for g in rows}


async def _requests_seen(fake: httpx.AsyncClient) -> int:
    return int((await fake.get("/_stats")).json()["total"])


async def test_resubmitted_job_is_served_from_the_cache(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    body = job_body(TITLES, samples=2, pairing="all_pairs")
    first = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert first["status"] == "succeeded", first
    bought = await _requests_seen(fake)
    n_items = first["generations"]["total"] + first["judgments"]["total"]
    assert first["generations"]["done"] == len(TITLES) * 3
    assert bought == n_items > 0  # no faults: one request an item
    assert first["cost_usd"] > 0 and first["cache_hits"] == 0 and first["saved_usd"] == 0
    cached = await session.scalar(select(func.count()).select_from(CachedResponse))
    assert cached == n_items

    second = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert second["status"] == "succeeded", second
    seen = (await fake.get("/_stats")).json()
    assert seen["total"] == bought, (seen, second)  # the provider saw nothing new
    assert second["cost_usd"] == 0
    assert second["prompt_tokens"] == second["completion_tokens"] == 0
    assert second["cache_hits"] == n_items
    assert second["saved_usd"] == pytest.approx(first["cost_usd"])
    assert second["pairs"] == first["pairs"] > 0

    # The same essays, sample by sample (the two samples of writer-a are not one answer twice).
    old, new = await _essays(session, first["id"]), await _essays(session, second["id"])
    assert old.keys() == new.keys()
    for k, g in new.items():
        assert g.cache_hit and g.cost_usd == 0 and g.attempts == 0
        assert g.text == old[k].text
        assert g.saved_usd == old[k].cost_usd > 0
    topic = next(iter(old))[0]
    writer_a = [g.text for (t, key, _), g in old.items() if "writer-a" in key and t == topic]
    assert len(writer_a) == 2 and writer_a[0] != writer_a[1]
    verdicts = (
        await session.scalars(select(Judgment).where(Judgment.job_id == second["id"]))
    ).all()
    assert verdicts and all(j.cache_hit and j.cost_usd == 0 for j in verdicts)

    # Pair statistics count them too (from the finished job's stored work summary).
    stats = (await api.get("/pairs/stats", params={"job_id": second["id"]})).json()["cost"]
    assert stats["generations"]["cache_hits"] == first["generations"]["total"]
    assert stats["judgments"]["cache_hits"] == first["judgments"]["total"]
    assert stats["total_cost_usd"] == 0
    assert stats["total_saved_usd"] == pytest.approx(first["cost_usd"])
    both = (await api.get("/pairs/stats")).json()["cost"]
    assert both["total_cost_usd"] == pytest.approx(first["cost_usd"])
    assert both["generations"]["cache_hits"] == first["generations"]["total"]

    # The essay view marks it too.
    page = (await api.get("/essays", params={"job_id": second["id"], "limit": 1})).json()
    assert page["items"][0]["cache_hit"] is True
    assert page["items"][0]["saved_usd"] > 0


async def test_cache_false_asks_the_provider_again(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    body = job_body(TITLES[:2])
    first = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert first["status"] == "succeeded", first
    bought = await _requests_seen(fake)
    n_items = first["generations"]["total"] + first["judgments"]["total"]
    assert bought == n_items

    again = await wait_job(
        api, (await api.post("/datagen/jobs", json={**body, "cache": False})).json()["id"]
    )
    assert again["status"] == "succeeded", again
    assert await _requests_seen(fake) == bought + n_items
    assert again["cache_hits"] == 0 and again["saved_usd"] == 0
    assert again["cost_usd"] > 0
    assert again["request"]["cache"] is False

    # A different sampling setting is a different request: not served from the cache.
    body["generators"][0]["temperature"] = 0.3
    third = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert third["status"] == "succeeded", third
    # writer-a's essays (new temperature) and every verdict on them are new; writer-b's are not
    assert third["cache_hits"] == len(TITLES[:2])
    assert await _requests_seen(fake) == bought + 2 * n_items - len(TITLES[:2])


def test_cache_key_covers_what_decides_the_answer() -> None:
    fake = ProviderConfig(name="fake", base_url="http://h:1/v1")
    alias = ProviderConfig(name="other-name", base_url="http://h:1/v1/")
    elsewhere = ProviderConfig(name="fake", base_url="http://h:2/v1")
    req = ChatRequest(
        provider="fake",
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.7,
        max_tokens=10,
    )
    key = cache_key(fake, req)
    assert key is not None and len(key) == 64
    assert cache_key(alias, req) == key  # the endpoint, not the name
    assert cache_key(elsewhere, req) != key
    variants = [
        ChatRequest(**{**_fields(req), "model": "m2"}),
        ChatRequest(**{**_fields(req), "messages": [{"role": "user", "content": "hi!"}]}),
        ChatRequest(**{**_fields(req), "temperature": 0.8}),
        ChatRequest(**{**_fields(req), "max_tokens": 11}),
        ChatRequest(**{**_fields(req), "extra": {"seed": 1}}),
        ChatRequest(**{**_fields(req), "sample_index": 1}),
        ChatRequest(**{**_fields(req), "json_mode": True}),
    ]
    keys = {cache_key(fake, v) for v in variants}
    assert key not in keys and len(keys) == len(variants)
    assert cache_key(ProviderConfig(name="local", kind="local"), req) is None


def _fields(req: ChatRequest) -> dict[str, object]:
    return {name: getattr(req, name) for name in req.__slots__}  # type: ignore[attr-defined]


async def test_unreadable_verdicts_are_not_cached(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
) -> None:
    body = job_body(TITLES[:1])
    await fake.post("/_control", json={"rate_malformed_judge": 1.0})
    first = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert first["judgments"]["failed"] == first["judgments"]["total"] > 0, first
    await fake.post("/_control", json={"rate_malformed_judge": 0.0})

    again = await wait_job(api, (await api.post("/datagen/jobs", json=body)).json()["id"])
    assert again["status"] == "succeeded" and again["pairs"] == 1, again
    # The essays came from the cache; the verdicts were asked again, and read this time.
    assert again["cache_hits"] == again["generations"]["total"]
    assert again["judgments"]["done"] == again["judgments"]["total"]
    by_model = (await fake.get("/_stats")).json()["by_model"]
    assert by_model["writer-a"] == by_model["writer-b"] == 1  # the first job's only
