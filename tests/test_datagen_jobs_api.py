"""The jobs list and cancelling a queued job. No worker runs in this module, so jobs stay
queued until the test cancels them."""

from __future__ import annotations

import httpx

from tests.datagen_helpers import job_body


async def test_jobs_list_newest_first_with_cursor_and_status_filter(
    api: httpx.AsyncClient, clean_db: None
) -> None:
    ids = [
        (await api.post("/datagen/jobs", json=job_body([f"Listing {i}"]))).json()["id"]
        for i in range(3)
    ]
    cancelled = (await api.post(f"/datagen/jobs/{ids[0]}/cancel")).json()
    assert cancelled["status"] == "cancelled"  # a queued job is cancelled at once
    first = (await api.get("/datagen/jobs", params={"limit": 2})).json()
    assert [j["id"] for j in first["items"]] == [ids[2], ids[1]]
    rest = (
        await api.get("/datagen/jobs", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [j["id"] for j in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    only = (await api.get("/datagen/jobs", params={"status": "cancelled"})).json()
    assert [j["id"] for j in only["items"]] == [ids[0]]
    bad = await api.get("/datagen/jobs", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    for job_id in ids[1:]:  # leave nothing for a later test's worker
        await api.post(f"/datagen/jobs/{job_id}/cancel")
