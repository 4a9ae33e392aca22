"""Labels flow into training: a DPO selection with ``labels: "prefer"`` lets the reviewers'
verdict override the judge, and exports carry the label column. The export is the one the DPO
worker writes (chatpgt.training.export.export_pairs); no training run is needed to check it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.training.export import export_pairs, filters_from_request
from tests import review_world
from tests.test_auth import assert_problem

# The reviewers' verdicts on tests/review_world.py's pairs (plurality rule):
# 9.0 chosen, 8.5 tie (1 chosen, 1 rejected), 7.0 tie, 6.0 bad (1 chosen, 1 bad),
# 3.5 rejected, and job 2's 5.0 chosen.
CONSENSUS = {9.0: "chosen", 8.5: "tie", 7.0: "tie", 6.0: "bad", 3.5: "rejected", 5.0: "chosen"}


async def _export(database_url: str, selection: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    count = await asyncio.to_thread(
        export_pairs, database_url, filters_from_request(selection), path
    )
    text = await asyncio.to_thread(path.read_text)
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == count
    return rows


async def test_prefer_lets_the_reviewers_override_the_judge(
    session: AsyncSession, database_url: str, tmp_path: Path
) -> None:
    world = await review_world.build(session)
    await session.commit()
    by_id = {p.id: p for p in world.pairs}

    ignored = await _export(database_url, {"min_confidence": 6}, tmp_path / "ignore.jsonl")
    assert [r["confidence"] for r in ignored] == [9.0, 8.5, 7.0, 6.0]
    assert [r["human_label"] for r in ignored] == ["chosen", "tie", "tie", "bad"]
    for row in ignored:  # never reversed
        assert row["chosen"][0]["content"] == by_id[row["id"]].chosen

    preferred = await _export(
        database_url, {"min_confidence": 6, "labels": "prefer"}, tmp_path / "prefer.jsonl"
    )
    # 9.0 agrees; ties and the bad pair are out; 3.5 and 5.0 are in although below 6, because
    # the reviewers decided them; 3.5 is reversed (they preferred its rejected essay).
    assert [r["confidence"] for r in preferred] == [9.0, 3.5, 5.0]
    assert [r["human_label"] for r in preferred] == ["chosen", "chosen", "chosen"]
    reversed_row = preferred[1]
    pair = by_id[reversed_row["id"]]
    assert reversed_row["chosen"][0]["content"] == pair.rejected
    assert reversed_row["rejected"][0]["content"] == pair.chosen
    assert (reversed_row["chosen_model"], reversed_row["rejected_model"]) == (
        pair.rejected_model,
        pair.chosen_model,
    )
    for row in (preferred[0], preferred[2]):
        assert row["chosen"][0]["content"] == by_id[row["id"]].chosen
    # Unlabelled pairs still need the confidence.
    assert {p.confidence for p in world.pairs} == set(CONSENSUS)


async def test_exports_carry_the_label_column(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    world = await review_world.build(session)
    unlabelled = await review_world.build(session, with_labels=False)
    await session.commit()
    lines = (await api.get("/pairs/export", params={"format": "jsonl"})).text.splitlines()
    labels = {json.loads(line)["id"]: json.loads(line)["human_label"] for line in lines}
    assert labels == {
        **{p.id: CONSENSUS[p.confidence] for p in world.pairs},
        **{p.id: None for p in unlabelled.pairs},
    }
    table = list(csv.DictReader(io.StringIO((await api.get("/pairs/export?format=csv")).text)))
    assert [r["human_label"] for r in table] == [
        *(CONSENSUS[p.confidence] for p in world.pairs),
        *("" for _ in unlabelled.pairs),
    ]


async def test_dpo_accepts_labels_prefer_and_counts_the_pairs_it_selects(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    await review_world.build(session)
    await session.commit()
    model = tmp_path / "model"
    model.mkdir()
    await asyncio.to_thread((model / "config.json").write_text, "{}")
    body = {"model": str(model), "pairs": {"min_confidence": 9.5}}
    # The judge alone: nothing reaches 9.5.
    assert_problem(await api.post("/train/dpo", json=body), 400)
    body["pairs"]["labels"] = "prefer"  # type: ignore[index]
    answer = await api.post("/train/dpo", json=body)
    assert answer.status_code == 202, answer.text
    run = answer.json()
    assert run["request"]["pairs"]["labels"] == "prefer"
    assert run["request"]["pairs_at_submit"] == 3  # 9.0, 3.5 (reversed) and 5.0
    await api.post(f"/train/runs/{run['id']}/cancel")
    bad = {"model": str(model), "pairs": {"labels": "maybe"}}
    assert_problem(await api.post("/train/dpo", json=bad), 422)
