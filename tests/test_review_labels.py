"""Labels (POST/GET /pairs/{id}/labels) and judge calibration (GET /judges/calibration)
through the real API on Postgres. The calibration figures are worked out by hand from the fixed
labels of tests/review_world.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.pairs.labels import PairLabel
from chatpgt.review.schemas import NOTE_MAX_CHARS
from tests import review_world
from tests.test_auth import assert_problem, bearer, new_key


async def label_count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(PairLabel))).scalar_one())


@pytest.fixture(scope="module")
def secured(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    yield from review_world.secured_api(service_env, log_dir)


async def test_a_label_is_stored_with_its_reviewer_and_shown_order(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await review_world.build(session, with_labels=False)
    await session.commit()
    pair = world.pairs[0]
    answer = await api.post(
        f"/pairs/{pair.id}/labels", json={"choice": "B", "shown_order": "BA", "note": "clearer"}
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    # Shown BA, the reviewer picked B: the pair's chosen essay.
    assert body["reviewer"] == "local" and body["preferred"] == "chosen"
    assert (body["choice"], body["shown_order"], body["note"]) == ("B", "BA", "clearer")

    # The same reviewer again: replaced, never doubled.
    again = await api.post(f"/pairs/{pair.id}/labels", json={"choice": "B", "shown_order": "AB"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == body["id"] and again.json()["preferred"] == "rejected"
    assert again.json()["note"] is None
    assert await label_count(session) == 1

    listed = (await api.get(f"/pairs/{pair.id}/labels")).json()
    assert listed["consensus"] == "rejected"
    assert [(i["reviewer"], i["preferred"]) for i in listed["items"]] == [("local", "rejected")]


@pytest.mark.parametrize(
    ("pair_offset", "body", "status"),
    [
        (10_000, {"choice": "A", "shown_order": "AB"}, 404),  # unknown pair
        (0, {"choice": "A", "shown_order": "AB", "note": "x" * (NOTE_MAX_CHARS + 1)}, 422),
        (0, {"choice": "C", "shown_order": "AB"}, 422),
        (0, {"choice": "A", "shown_order": "AA"}, 422),
        (0, {"choice": "A"}, 422),
        (0, {"choice": "A", "shown_order": "AB", "reviewer": "someone else"}, 422),
    ],
)
async def test_bad_labels_are_problems_and_change_nothing(
    api: httpx.AsyncClient,
    session: AsyncSession,
    pair_offset: int,
    body: dict[str, Any],
    status: int,
) -> None:
    world = await review_world.build(session, with_labels=False)
    await session.commit()
    pair_id = world.pairs[0].id + pair_offset
    # A label that exists already must survive a bad replacement untouched.
    first = await api.post(
        f"/pairs/{world.pairs[0].id}/labels", json={"choice": "tie", "shown_order": "AB"}
    )
    assert first.status_code == 201
    assert_problem(await api.post(f"/pairs/{pair_id}/labels", json=body), status)
    listed = (await api.get(f"/pairs/{world.pairs[0].id}/labels")).json()["items"]
    assert [(i["choice"], i["updated_at"]) for i in listed] == [("tie", first.json()["updated_at"])]
    assert await label_count(session) == 1
    assert_problem(await api.get("/pairs/999999/labels"), 404)


async def test_reviewers_are_key_names_and_a_read_key_cannot_label(
    secured: str, session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    world = await review_world.build(session, with_labels=False)
    await session.commit()
    pair = world.pairs[0]
    ann, bob = (
        await new_key(sessionmaker, "write", "ann"),
        await new_key(sessionmaker, "write", "bob"),
    )
    reader = await new_key(sessionmaker, "read", "reader")
    async with httpx.AsyncClient(base_url=secured, timeout=30) as client:
        url = f"/pairs/{pair.id}/labels"
        assert_problem(await client.post(url, json={"choice": "A", "shown_order": "AB"}), 401)
        refused = await client.post(
            url, json={"choice": "A", "shown_order": "AB"}, headers=bearer(reader)
        )
        assert_problem(refused, 403)
        for key, choice in ((ann, "A"), (bob, "bad")):
            answer = await client.post(
                url, json={"choice": choice, "shown_order": "AB"}, headers=bearer(key)
            )
            assert answer.status_code == 201, answer.text
        listed = (await client.get(url, headers=bearer(reader))).json()
    assert [(i["reviewer"], i["preferred"]) for i in listed["items"]] == [
        ("ann", "chosen"),
        ("bob", "bad"),
    ]
    assert listed["consensus"] == "bad"  # bad ties with chosen: in doubt, left out
    assert await label_count(session) == 2


def _rate(body: dict[str, Any], n: int, hits: int) -> None:
    assert (body["n"], body["hits"]) == (n, hits)
    if n:
        assert body["rate"] == pytest.approx(hits / n)


async def test_calibration_equals_the_hand_computation(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await review_world.build(session)
    await session.commit()
    cal = (await api.get("/judges/calibration", params={"target": 0.75, "min_labels": 2})).json()
    assert cal["target"] == 0.75
    judges = {(j["provider"], j["model"], j["method"]): j for j in cal["judges"]}
    assert set(judges) == {("fake", "judge", "json"), ("fake", "judge-2", "ab_probability")}
    j1 = judges[("fake", "judge", "json")]
    assert (j1["pairs"], j1["labels"]) == (5, 9)
    buckets = {b["bucket"]: b for b in j1["buckets"]}
    assert [b["bucket"] for b in j1["buckets"]] == list(range(1, 11))
    # by hand: bucket -> (labels, ties, bad, decisive, agreeing)
    want = {9: (2, 0, 0, 2, 2), 8: (2, 0, 0, 2, 1), 7: (2, 1, 0, 1, 0), 6: (2, 0, 1, 1, 1),
            3: (1, 0, 0, 1, 0)}  # fmt: skip
    for bucket in range(1, 11):
        labels, ties, bad, n, hits = want.get(bucket, (0, 0, 0, 0, 0))
        b = buckets[bucket]
        assert (b["labels"], b["ties"], b["bad"]) == (labels, ties, bad), bucket
        _rate(b["agreement"], n, hits)
    # thresholds: >=9 2/2, >=8 3/4, >=7 3/5, >=4..6 4/6, <=3 4/7
    cumulative = {10: (0, 0), 9: (2, 2), 8: (4, 3), 7: (5, 3), 6: (6, 4), 5: (6, 4), 4: (6, 4),
                  3: (7, 4), 2: (7, 4), 1: (7, 4)}  # fmt: skip
    for t in j1["thresholds"]:
        _rate(t["agreement"], *cumulative[t["min_confidence"]])
    # 3 of 4: the 95% Wilson interval is (0.3006, 0.9544)
    at_8 = j1["thresholds"][7]["agreement"]
    assert (at_8["low"], at_8["high"]) == (
        pytest.approx(0.3006, abs=1e-4),
        pytest.approx(0.9544, abs=1e-4),
    )
    # 2 of 2: (0.3424, 1.0)
    assert j1["thresholds"][8]["agreement"]["low"] == pytest.approx(0.3424, abs=1e-4)
    assert j1["suggested_min_confidence"] == 8  # lowest t with agreement >= 0.75 over >= 2
    # flips: 1 of 6 matchups; position: 5 A/B wins as A + 2 flipped-A of 12 judgments
    _rate(j1["flip_rate"], 6, 1)
    _rate(j1["position_bias"], 12, 7)
    _rate(j1["judge_prefers_longer"], 4, 3)  # the equal-length pair is left out
    _rate(j1["human_prefers_longer"], 6, 3)
    j2 = judges[("fake", "judge-2", "ab_probability")]
    _rate(j2["agreement"], 1, 1)
    _rate(j2["judge_prefers_longer"], 1, 0)
    _rate(j2["flip_rate"], 1, 0)

    # Every judge together; a target met again lower down (non-monotonic agreement).
    pooled = (await api.get("/judges/calibration", params={"target": 0.6})).json()
    assert pooled["min_labels"] == 5
    overall = {t["min_confidence"]: t["agreement"] for t in pooled["overall"]}
    _rate(overall[5], 7, 5)  # job 2's 5.0 pair joins
    _rate(overall[4], 7, 5)
    _rate(overall[1], 8, 5)
    assert pooled["suggested_min_confidence"] == 1  # 5/8 = 0.625 over every label
    judge_1_only = {j["model"]: j for j in pooled["judges"]}["judge"]
    # judge 1 alone: 4/7 below 4, then 4/6 at 4 (3/5 = 0.6 at 7 too, but 4 is lower)
    assert judge_1_only["suggested_min_confidence"] == 4
    assert (await api.get("/judges/calibration", params={"target": 1.0})).json()[
        "suggested_min_confidence"
    ] is None

    stats = (await api.get("/pairs/stats", params={"job_id": world.job_ids[0]})).json()
    assert stats["human_labels"] == {"labels": 9, "target": 0.8, "suggested_min_confidence": None}
    assert stats["counts"]["total"] == 5
    filtered = (await api.get("/judges/calibration", params={"job_id": world.job_ids[1]})).json()
    assert [j["model"] for j in filtered["judges"]] == ["judge-2"]
