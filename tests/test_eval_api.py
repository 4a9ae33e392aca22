"""Evaluation runs through the real API, Postgres, Redis and a gpu-queue Celery worker: SFT of a
tiny llama (its essay split stored), then an evaluation of base vs SFT on the held-out essays
with a local ab_probability judge; cancel; the requests refused at submit with nothing queued."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests import fixtures_training as ft
from tests import procs
from tests.fixtures_training import finished, insert_pairs, sft_body
from tests.test_cli import run_cli

pytestmark = pytest.mark.e2e
tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus
gpu_worker = ft.gpu_worker
PROBLEM = "application/problem+json"


async def wait_eval(
    api: httpx.AsyncClient, run_id: int, until: Any, worker: procs.Proc, within_s: float = 180
) -> dict[str, Any]:
    return await ft.wait_run(
        api, run_id, until, worker=worker, within_s=within_s, runs_path="/eval/runs"
    )


def assert_problem(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert needle in response.json()["detail"], response.json()


async def sft_run(
    api: httpx.AsyncClient, worker: procs.Proc, model: Path, corpus: Path, name: str, **hp: Any
) -> dict[str, Any]:
    body = {**sft_body(model, corpus, max_steps=2, **hp), "name": name}
    response = await api.post("/train/sft", json=body)
    assert response.status_code == 202, response.text
    run = await ft.wait_run(api, response.json()["id"], finished, worker=worker)
    assert run["status"] == "succeeded", run["error"]
    return run


async def models_by_name(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await api.get("/models", params={"limit": 200})
    return {m["name"]: m for m in response.json()["items"]}


async def test_eval_run_end_to_end(
    api: httpx.AsyncClient,
    session: AsyncSession,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
    tmp_path: Path,
) -> None:
    await insert_pairs(session, [8, 7, 9])  # candidate essays by "other writers"
    sft = await sft_run(
        api, gpu_worker, tiny_model_dir, essay_corpus, "eval-sft", eval_fraction=0.34
    )
    registry = await models_by_name(api)
    base, tuned = registry[str(tiny_model_dir)], registry["eval-sft"]
    assert base["kind"] == "base" and tuned["lineage"][0]["id"] == base["id"]

    # Two blind playground votes between them: the SFT model won once (shown as A), one tie.
    from chatpgt.review.models import ArenaBattle

    for shown, choice in (([tuned["id"], base["id"]], "A"), ([base["id"], tuned["id"]], "tie")):
        session.add(
            ArenaBattle(
                title="On voting",
                reviewer="ann",
                model_ids=shown,
                generation_ids=[],
                choice=choice,
                winner_model_id=shown[0] if choice == "A" else None,
                voted_by="ann",
            )
        )
    await session.commit()

    body = {
        "models": [base["id"], "eval-sft"],
        "name": "base-vs-sft",
        "generation": {"max_new_tokens": 12},
        "style": {"chunk_words": 30, "folds": 2},
        "controls": True,
        "judge": {
            "provider": "local",
            "model": str(tiny_model_dir),
            "method": "ab_probability",
            "min_letter_mass": 0.0,
        },
        "bootstrap_samples": 100,
    }
    response = await api.post("/eval/runs", json=body)
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["status"] == "queued"
    held = run["heldout"]
    assert held["sft_run_id"] == sft["id"] and len(held["titles"]) == 2
    assert "no model of the lineage trained on them" in held["statement"]

    run = await wait_eval(api, run["id"], finished, gpu_worker)
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"]["done"] == run["progress"]["total"] > 0
    results = run["results"]
    names = [m["name"] for m in results["models"]]
    assert names == [str(tiny_model_dir), "eval-sft"]
    for m in results["models"]:
        ppl = m["perplexity"]
        assert ppl["low"] <= ppl["value"] <= ppl["high"] and ppl["n"] == 2
        # Four training essays cannot make a reliable classifier: no number, the reason.
        assert "too few chunks" in m["style"]["not_measured"]
        assert m["descriptive"]["count"] == 2
        assert m["fluency"]["value"] > 0
    paired = results["models"][1]["paired"]
    assert paired["vs"] == str(tiny_model_dir)
    ratio = paired["perplexity_ratio"]
    assert ratio["low"] <= ratio["value"] <= ratio["high"] and ratio["n"] == 2
    assert ratio["value"] == pytest.approx(
        results["models"][1]["perplexity"]["value"] / results["models"][0]["perplexity"]["value"]
    )
    assert "style_difference" not in paired  # not measured, so not compared
    # The controls: random weights (perplexity far above the trained models'), shuffled words.
    controls = {c["name"]: c for c in results["controls"]}
    assert set(controls) == {"random weights", "shuffled words"}
    assert controls["random weights"]["paired"]["vs"] == str(tiny_model_dir)
    assert controls["random weights"]["perplexity"]["n"] == 2
    assert controls["shuffled words"]["fluency"]["value"] > 0
    base_out, sft_out = results["models"]
    assert sft_out["win_rate"] == {"reference": True}  # the reference by default
    win = base_out["win_rate"]
    assert win["judged"] + win["failed"] == 2
    assert win["wins"] + win["losses"] + win["ties"] == win["judged"]
    assert results["reference"]["name"] == "eval-sft"
    assert "not_measured" in results["real_essays"]["style"]
    assert results["style_classifier"]["author_essays"] == 4  # the SFT run's training essays
    assert results["style_classifier"]["name"] == "evaluation_style_classifier"
    assert results["style_classifier"]["features"] == "char+word"  # not the datagen judge's

    (human,) = results["human_win_rates"]
    assert (human["first"]["name"], human["second"]["name"]) == (str(tiny_model_dir), "eval-sft")
    assert (human["first_wins"], human["second_wins"], human["ties"]) == (0, 1, 1)
    assert human["first_win_rate"]["n"] == 1 and human["first_win_rate"]["rate"] == 0.0

    report = await api.get(f"/eval/runs/{run['id']}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "M1 vs M2: M1 won 0, M2 won 1, 1 tie" in report.text
    assert report.text.count("data:image/png;base64,") >= 3
    assert "no model of the lineage trained on them" in report.text
    data = (await api.get(f"/eval/runs/{run['id']}/report", params={"format": "json"})).json()
    assert data["heldout"]["titles"] == held["titles"]
    assert len(data["models"][0]["generations"]) == 2

    listed = (await api.get("/eval/runs")).json()["items"]
    assert listed[0]["id"] == run["id"]

    # Cancel: a run cancelled right after submit ends cancelled without a report.
    response = await api.post("/eval/runs", json={**body, "judge": None, "name": "cancelled"})
    cancel = await api.post(f"/eval/runs/{response.json()['id']}/cancel")
    assert cancel.status_code == 202, cancel.text
    gone = await wait_eval(api, cancel.json()["id"], finished, gpu_worker)
    assert gone["status"] == "cancelled"
    assert_problem(await api.get(f"/eval/runs/{gone['id']}/report"), 409, "no report")
    assert_problem(await api.post(f"/eval/runs/{run['id']}/cancel"), 409, "succeeded")

    assert_problem(await api.get("/eval/runs/999999"), 404, "does not exist")

    # The CLI: the table of a finished run, its HTML saved; a run followed to its end.
    cli_env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    saved = tmp_path / "report.html"
    done = run_cli(
        cli_env, str(api.base_url), "eval", "report", str(run["id"]), "--html", str(saved)
    )
    assert done.returncode == 0, done.stderr
    assert "real held-out essays" in done.stdout and "eval-sft (sft)" in done.stdout
    assert "human votes (blind playground" in done.stdout
    assert "M1 vs M2: M1 won 0, M2 won 1, 1 tie; M1's win rate 0% [0%," in done.stdout
    assert saved.read_text().startswith("<!doctype html>")
    done = run_cli(
        cli_env,
        str(api.base_url),
        "eval",
        "run",
        str(base["id"]),
        "eval-sft",
        "--max-essays",
        "1",
        "--no-style",
        "--max-new-tokens",
        "4",
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert "submitted eval run" in done.stderr
    assert "perplexity" in done.stdout and "report:" in done.stdout
    assert "the first 1 of 2" in done.stdout
    done = run_cli(cli_env, str(api.base_url), "eval", "status", "999999")
    assert done.returncode == 1 and "does not exist" in done.stderr


async def test_bad_eval_requests_are_refused_and_nothing_is_queued(
    api: httpx.AsyncClient,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    before = len((await api.get("/eval/runs", params={"limit": 200})).json()["items"])
    no_split = await sft_run(
        api, gpu_worker, tiny_model_dir, essay_corpus, "no-heldout", eval_fraction=0.0
    )

    assert_problem(
        await api.post("/eval/runs", json={"models": ["no-such-model-name-here"]}),
        400,
        "no-such-model-name-here",
    )
    assert_problem(await api.post("/eval/runs", json={"models": [987654]}), 400, "987654")
    # A model given by path has no lineage: no split is known.
    assert_problem(
        await api.post("/eval/runs", json={"models": [str(tiny_model_dir)]}), 400, "essay split"
    )
    # An SFT run that held nothing out.
    assert_problem(
        await api.post("/eval/runs", json={"models": ["no-heldout"]}), 400, "nothing is left"
    )
    assert_problem(
        await api.post("/eval/runs", json={"models": ["no-heldout"], "sft_run": 987654}),
        400,
        "not an SFT run",
    )
    if not os.environ.get("OPENAI_API_KEY"):
        assert_problem(
            await api.post(
                "/eval/runs",
                json={
                    "models": ["no-heldout"],
                    "sft_run": no_split["id"],
                    "judge": {"provider": "openai", "model": "gpt-4o"},
                },
            ),
            400,
            "OPENAI_API_KEY",
        )
    assert_problem(
        await api.post(
            "/eval/runs",
            json={"models": ["no-heldout"], "judge": {"provider": "nope", "model": "x"}},
        ),
        400,
        "Unknown judge provider",
    )
    response = await api.post("/eval/runs", json={"models": []})
    assert response.status_code == 422
    after = len((await api.get("/eval/runs", params={"limit": 200})).json()["items"])
    assert after == before


async def test_other_writers_leave_out_the_evaluated_trained_models_essays(
    session: AsyncSession, database_url: str
) -> None:
    """The style classifier's "other writers" never include essays the evaluated trained models
    wrote (the on-policy essays DPO learnt from): they would teach it that the model's own
    writing is not the author's. A base model's essays stay."""
    from sqlalchemy import create_engine

    from chatpgt.evaluation.repository import EvalStore
    from tests import factories

    job = await factories.job(session)
    topic = await factories.topic(session, "Whose essays are other writers")
    await factories.generation(session, job, topic, "base-writer", "base essay text")
    await factories.generation(
        session, job, topic, "/runs/7/model", "sft essay by path", sample_index=1
    )
    await factories.generation(
        session, job, topic, "quality-sft", "sft essay by name", sample_index=2
    )
    await session.commit()
    engine = create_engine(database_url.replace("+asyncpg", "+psycopg", 1))
    try:
        store = EvalStore(engine)
        everything = store.candidate_essays(100_000)
        assert {"base essay text", "sft essay by path", "sft essay by name"} <= set(everything)
        other = store.candidate_essays(100_000, exclude_models={"/runs/7/model", "quality-sft"})
        assert "base essay text" in other
        assert not {"sft essay by path", "sft essay by name"} & set(other)
        assert len(other) == len(everything) - 2
    finally:
        engine.dispose()
