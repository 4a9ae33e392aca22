"""On-policy DPO rounds through the real API, Postgres, Redis, a datagen worker (which runs the
rounds' steps and the local generator) and a gpu worker: two rounds on the tiny llama, round
2's generator being round 1's DPO model, the lineage base -> SFT -> DPO r1 -> DPO r2; cancel;
and the requests refused at submit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.db.base import utcnow
from chatpgt.db.session import transaction
from chatpgt.evaluation.models import EvalRun
from chatpgt.rounds.models import RoundsRun
from tests import fixtures_training as ft
from tests import procs
from tests.datagen_helpers import wait_job
from tests.fixtures_training import finished, sft_body, wait_run

pytestmark = pytest.mark.e2e
tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus
gpu_worker = ft.gpu_worker
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def rounds_worker(
    service_env: dict[str, str], log_dir: Path, fake_provider: str
) -> Iterator[procs.Proc]:
    """A datagen worker stepping rounds every 0.3 s."""
    env = {**ft.worker_env(service_env), "CHATPGT_ROUNDS_POLL_S": "0.3"}
    proc = procs.start_worker(env, log_dir, "datagen", concurrency=2, name="rounds")
    yield proc
    proc.stop()


def rounds_body(model: int | str, **overrides: Any) -> dict[str, Any]:
    return {
        "model": model,
        "rounds": 2,
        "name": "tiny-rounds",
        "topics": {"titles": ["Round topic one", "Round topic two"]},
        "policy": {
            "provider": "local",
            "samples_per_topic": 2,
            "temperature": 1.0,
            "max_tokens": 8,
        },
        "judge": {"provider": "fake", "model": "judge"},
        "pairing": "all_pairs",
        "dpo": {
            "min_confidence": 0,
            "hyperparameters": {
                "max_steps": 1,
                "max_length": 128,
                "eval_fraction": 0,
                "learning_rate": 1e-3,
            },
            "samples": {"prompts": ["Write an essay."], "max_new_tokens": 4},
        },
        **overrides,
    }


async def wait_rounds(
    api: httpx.AsyncClient, run_id: int, workers: list[procs.Proc], within_s: float = 420
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = (await api.get(f"/train/rounds/{run_id}")).json()
        if run["status"] in {"succeeded", "failed", "cancelled"}:
            return run
        await asyncio.sleep(0.3)
    logs = "\n".join(w.log()[-4000:] for w in workers)
    raise AssertionError(f"rounds run {run_id} never finished: {run}\n{logs}")


def run_cli(env: dict[str, str], api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**env, "COLUMNS": "200", "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "chatpgt.cli", "--api", api_url, *args]
    done = subprocess.run(
        argv, cwd=procs.ROOT, env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def assert_problem(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert needle in response.text, response.text


async def test_two_on_policy_rounds_end_to_end(
    api: httpx.AsyncClient,
    api_url: str,
    service_env: dict[str, str],
    clean_db: None,
    rounds_worker: procs.Proc,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    sft = await api.post(
        "/train/sft",
        json={**sft_body(tiny_model_dir, essay_corpus, max_steps=2), "name": "tiny-sft"},
    )
    assert sft.status_code == 202, sft.text
    sft_run = await wait_run(api, sft.json()["id"], finished, worker=gpu_worker, within_s=240)
    assert sft_run["status"] == "succeeded", sft_run["error"]
    sft_model = sft_run["model_id"]

    # Refused at submit, nothing written.
    assert_problem(
        await api.post("/train/rounds", json=rounds_body(sft_model, rounds=0)), 422, "rounds"
    )
    assert_problem(
        await api.post("/train/rounds", json=rounds_body("no-such-model")), 400, "no-such-model"
    )
    models = (await api.get("/models")).json()["items"]
    base = next(m for m in models if m["kind"] == "base")
    assert_problem(await api.post("/train/rounds", json=rounds_body(base["id"])), 400, "base model")
    keyless = rounds_body(sft_model, judge={"provider": "fake-keyfile", "model": "judge"})
    assert_problem(await api.post("/train/rounds", json=keyless), 400, "fake-keyfile")
    unknown = rounds_body(sft_model, policy={"provider": "nowhere"})
    assert_problem(await api.post("/train/rounds", json=unknown), 400, "nowhere")
    one = rounds_body(sft_model, policy={"provider": "local", "samples_per_topic": 1})
    assert_problem(await api.post("/train/rounds", json=one), 400, "two candidate")
    assert (await api.get("/train/rounds")).json()["items"] == []

    submitted = await api.post("/train/rounds", json=rounds_body(sft_model))
    assert submitted.status_code == 202, submitted.text
    run = await wait_rounds(api, submitted.json()["id"], [rounds_worker, gpu_worker])
    assert run["status"] == "succeeded", (run["error"], run["rounds"])
    assert run["stop_reason"] == "completed"
    r1, r2 = run["rounds"]
    for r in (r1, r2):
        assert r["status"] == "succeeded", r
        assert r["datagen_job_id"] and r["dpo_run_id"] and r["model_id"]
        assert r["pairs"] >= 1 and r["pairs_trained"] == r["pairs"]
    assert run["model_id"] == r2["model_id"]
    assert r1["generator_model"] == {"id": sft_model, "name": "tiny-sft"}
    assert r2["generator_model"] == {"id": r1["model_id"], "name": "tiny-rounds-r1"}

    # Round 2's candidates were written by round 1's DPO model, by its registry name.
    job2 = (await api.get(f"/datagen/jobs/{r2['datagen_job_id']}")).json()
    assert job2["request"]["generators"][0] == {
        **job2["request"]["generators"][0],
        "provider": "local",
        "model": "tiny-rounds-r1",
    }
    essays = (await api.get("/essays", params={"job_id": r2["datagen_job_id"]})).json()["items"]
    assert essays and {e["model"] for e in essays} == {"tiny-rounds-r1"}
    # Round 2's DPO started from round 1's model, on round 2's pairs only.
    dpo2 = (await api.get(f"/train/runs/{r2['dpo_run_id']}")).json()
    assert dpo2["start_model"]["model_id"] == r1["model_id"]
    assert dpo2["request"]["pairs"]["job_ids"] == [r2["datagen_job_id"]]

    lineage = (await api.get(f"/models/{r2['model_id']}")).json()["lineage"]
    assert [e["kind"] for e in lineage] == ["base", "sft", "dpo", "dpo"]
    assert [e["name"] for e in lineage[1:]] == ["tiny-sft", "tiny-rounds-r1", "tiny-rounds-r2"]
    assert [e["id"] for e in lineage[1:]] == [sft_model, r1["model_id"], r2["model_id"]]

    # The round names are taken now: the same rounds again is a 409, nothing written.
    again = await api.post("/train/rounds", json=rounds_body(sft_model))
    assert_problem(again, 409, "tiny-rounds-r1")

    # The CLI shows the rounds, and refuses what the API refuses.
    shown = run_cli(service_env, api_url, "train", "rounds-status", str(run["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "round 2 succeeded: generator 'tiny-rounds-r1'" in shown.stdout, shown.stdout
    assert f"model {r2['model_id']}" in shown.stdout
    zero = run_cli(
        service_env, api_url, "train", "rounds", "--model", str(sft_model), "--rounds", "0",
        "--judge", "fake:judge", "-t", "x", "--no-follow",
    )  # fmt: skip
    assert zero.returncode == 2
    refused = run_cli(service_env, api_url, "train", "rounds-cancel", str(run["id"]))
    assert refused.returncode == 1 and "cannot become cancelled" in refused.stderr

    # Budget over all rounds' datagen: too small for round 1's judgments, so the run stops in
    # round 1 (failed: no round produced a model), with no DPO run and no round 2.
    poor = rounds_body(sft_model, name="poor-rounds", budget_usd=1e-6)
    spent = await api.post("/train/rounds", json=poor)
    assert spent.status_code == 202, spent.text
    spent_run = await wait_rounds(api, spent.json()["id"], [rounds_worker, gpu_worker])
    assert spent_run["stop_reason"] == "budget_exhausted", spent_run
    assert spent_run["status"] == "failed" and len(spent_run["rounds"]) == 1
    (only,) = spent_run["rounds"]
    assert only["dpo_run_id"] is None and only["cost_usd"] == spent_run["cost_usd"]
    poor_job = (await api.get(f"/datagen/jobs/{only['datagen_job_id']}")).json()
    assert poor_job["stop_reason"] == "budget_exhausted" and poor_job["budget_usd"] == 1e-6

    # Cancel: the run stops, the current job (or DPO run) is cancelled, no model registered.
    started = await api.post(
        "/train/rounds", json=rounds_body(r2["model_id"], name="cancelled-rounds", rounds=3)
    )
    assert started.status_code == 202, started.text
    rid = started.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = (await api.get(f"/train/rounds/{rid}")).json()
        if seen["rounds"]:
            break
        await asyncio.sleep(0.1)
    cancel = await api.post(f"/train/rounds/{rid}/cancel")
    assert cancel.status_code == 202, cancel.text
    stopped = await wait_rounds(api, rid, [rounds_worker, gpu_worker], within_s=120)
    assert stopped["status"] == "cancelled" and stopped["stop_reason"] == "cancelled", stopped
    assert len(stopped["rounds"]) == 1 and stopped["rounds"][0]["status"] == "cancelled"
    assert stopped["rounds"][0]["model_id"] is None
    # A running job stops within seconds of its cancel.
    job = await wait_job(api, stopped["rounds"][0]["datagen_job_id"], within_s=60)
    assert job["status"] in {"cancelled", "succeeded"}
    if stopped["rounds"][0]["dpo_run_id"]:
        dpo = (await api.get(f"/train/runs/{stopped['rounds'][0]['dpo_run_id']}")).json()
        assert dpo["status"] == "cancelled"
    names = {m["name"] for m in (await api.get("/models")).json()["items"]}
    assert not any(n.startswith("cancelled-rounds") for n in names)
    # Cancelling a finished run is a 409.
    assert_problem(await api.post(f"/train/rounds/{run['id']}/cancel"), 409, "cannot become")


EVALUATION = {
    "metric": "style",
    # No round can improve by 1e9: with patience 2 the run stops after round 2 of 3.
    "min_improvement": 1e9,
    "patience": 2,
    "max_essays": 2,
    "generation": {"max_new_tokens": 4},
    "style": {"chunk_words": 20, "folds": 2},
    "bootstrap_samples": 50,
}


async def test_rounds_with_evaluation_end_to_end(
    api: httpx.AsyncClient,
    api_url: str,
    service_env: dict[str, str],
    clean_db: None,
    rounds_worker: procs.Proc,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    """Each round's model evaluated against the model it started from and the best so far
    (eval runs on the gpu worker), its score the one in its eval run's results; the stop rule
    ending a run of 3 rounds after 2 (patience 2, no round can improve by 1e9); the evaluation
    requests refused at submit."""
    body = {**sft_body(tiny_model_dir, essay_corpus, max_steps=2, eval_fraction=0.34)}
    sft = await api.post("/train/sft", json={**body, "name": "tiny-sft"})
    assert sft.status_code == 202, sft.text
    sft_run = await wait_run(api, sft.json()["id"], finished, worker=gpu_worker, within_s=240)
    assert sft_run["status"] == "succeeded", sft_run["error"]
    sft_model = sft_run["model_id"]

    # Refused at submit, nothing written (neither a rounds run nor an eval run).
    refused = [
        ({**EVALUATION, "metric": "win_rate"}, 422, "needs a judge"),
        ({**EVALUATION, "metric": "perplexity", "perplexity": False}, 422, "perplexity is false"),
        ({**EVALUATION, "style": {"enabled": False}}, 422, "style.enabled"),
        ({**EVALUATION, "models": [sft_model]}, 422, "models"),
        ({**EVALUATION, "judge": {"provider": "nope", "model": "j"}}, 400, "Unknown judge"),
        ({**EVALUATION, "judge": {"provider": "fake-keyfile", "model": "j"}}, 400, "fake-keyfile"),
    ]
    for evaluation, status, needle in refused:
        bad = rounds_body(sft_model, evaluation=evaluation)
        assert_problem(await api.post("/train/rounds", json=bad), status, needle)
    assert (await api.get("/train/rounds")).json()["items"] == []
    assert (await api.get("/eval/runs")).json()["items"] == []
    usage = run_cli(
        service_env, api_url, "train", "rounds", "--model", str(sft_model), "--rounds", "2",
        "--judge", "fake:judge", "-t", "x", "--eval-metric", "win_rate", "--eval-patience", "2",
        "--no-follow",
    )  # fmt: skip
    assert usage.returncode == 2 and "needs a judge" in usage.stderr, usage.stderr

    # Scored by perplexity: a style score on the tiny corpus is "not measured" (its classifier
    # has too few chunks), which would fail the round with that reason.
    scored = {**EVALUATION, "metric": "perplexity"}
    submitted = await api.post(
        "/train/rounds",
        json=rounds_body(sft_model, name="eval-rounds", rounds=3, evaluation=scored),
    )
    assert submitted.status_code == 202, submitted.text
    run = await wait_rounds(api, submitted.json()["id"], [rounds_worker, gpu_worker])
    assert run["status"] == "succeeded", (run["error"], run["rounds"])
    assert run["stop_reason"] == "no_improvement"
    r1, r2 = run["rounds"]
    evals = {}
    for r in (r1, r2):
        assert r["status"] == "succeeded" and r["model_id"] and r["eval_run_id"], r
        assert r["improved"] is False
        ev = (await api.get(f"/eval/runs/{r['eval_run_id']}")).json()
        evals[r["number"]] = {m["model_id"]: m for m in ev["results"]["models"]}
        assert ev["status"] == "succeeded", ev["error"]
        assert ev["name"] == f"eval-rounds-r{r['number']}-eval"
        assert ev["request"]["reference"] == "real" and ev["request"]["max_essays"] == 2
        assert ev["request"]["generation"]["max_new_tokens"] == 4
        by_id = evals[r["number"]]
        assert r["score"] == by_id[r["model_id"]]["perplexity"]["value"]
        assert r["start_score"] == by_id[r["generator_model"]["id"]]["perplexity"]["value"]
    assert r2["generator_model"]["id"] == r1["model_id"]
    # Round 1 did not improve: the best so far is the SFT model, evaluated in round 2's run too.
    assert set(evals[1]) == {sft_model, r1["model_id"]}
    assert set(evals[2]) == {sft_model, r1["model_id"], r2["model_id"]}
    # Perplexity samples nothing: r1's model scores the same in both eval runs.
    ppl = [evals[n][r1["model_id"]]["perplexity"]["value"] for n in (1, 2)]
    assert ppl[1] == pytest.approx(ppl[0], rel=1e-6)
    # The run's model is the last round's (registered), the best the start model.
    assert run["model_id"] == r2["model_id"]
    assert run["best_round"] == 0 and run["best_model_id"] == sft_model
    names = {m["name"] for m in (await api.get("/models")).json()["items"]}
    assert {"eval-rounds-r1", "eval-rounds-r2"} <= names and "eval-rounds-r3" not in names

    shown = run_cli(service_env, api_url, "train", "rounds-status", str(run["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "stop no_improvement" in shown.stdout and "best round 0" in shown.stdout
    assert f"eval run {r2['eval_run_id']} · perplexity " in shown.stdout, shown.stdout
    assert "no improvement" in shown.stdout


async def evaluating_run(
    session: AsyncSession,
    *,
    eval_status: str,
    results: dict[str, Any] | None = None,
    error: str | None = None,
    rounds: int = 2,
    evaluation: dict[str, Any] | None = None,
) -> tuple[int, int, int, int]:
    """A rounds run whose round 1 is evaluating: (run id, eval run id, start model id, round 1's
    model id). Rows only; the step is called directly."""
    from chatpgt.evaluation import repository as eval_repo
    from chatpgt.rounds import repository as rounds_repo
    from chatpgt.rounds.schemas import RoundsRequest
    from chatpgt.training.models import RegisteredModel

    start = RegisteredModel(name="start-sft", kind="sft", path="/nowhere/sft", metrics={})
    session.add(start)
    await session.flush()
    new = RegisteredModel(
        name="ev-r1", kind="dpo", path="/nowhere/r1", parent_id=start.id, metrics={}
    )
    session.add(new)
    await session.flush()
    ev = await eval_repo.create_run(session, name="ev-r1-eval", request={}, models=[], heldout={})
    ev.status, ev.results, ev.error = eval_status, results or {}, error
    request = RoundsRequest.model_validate(
        {
            "model": start.id,
            "rounds": rounds,
            "name": "ev",
            "topics": {"titles": ["unused"]},
            "judge": {"provider": "fake", "model": "judge"},
            "evaluation": evaluation or {"metric": "perplexity"},
        }
    )
    run = await rounds_repo.create_run(
        session,
        name="ev",
        request={**request.model_dump(mode="json"), "topic_ids": []},
        start_model={"id": start.id, "name": start.name, "kind": "sft"},
    )
    await rounds_repo.transition(session, run.id, "running", started_at=utcnow())
    await rounds_repo.add_round(
        session,
        rounds_run_id=run.id,
        number=1,
        status="evaluating",
        generator_model={"id": start.id, "name": start.name},
        model_id=new.id,
        eval_run_id=ev.id,
        cost_usd=0,
    )
    await session.commit()
    return run.id, ev.id, start.id, new.id


@pytest.mark.parametrize(
    ("new_ppl", "rounds", "improved", "stop", "best_round"),
    [
        (31.5, 2, False, "no_improvement", 0),  # worse (higher): patience 1 stops the run
        (25.0, 1, True, "completed", 1),  # better: the best round; the only round done
    ],
)
async def test_an_evaluated_round_is_scored_and_the_rule_decides(
    session: AsyncSession,
    service_env: dict[str, str],
    new_ppl: float,
    rounds: int,
    improved: bool,
    stop: str,
    best_round: int,
) -> None:
    """The step reads both models' scores out of the eval run's results and records them; a
    round that did not improve (perplexity up) with patience 1 ends the run at the next step,
    no_improvement, before a round 2; one that improved is the best round."""
    from chatpgt.rounds import service as rounds_service
    from chatpgt.settings import get_settings

    settings = get_settings()
    sent: list[tuple[str, int]] = []
    run_id, eval_id, start_id, new_id = await evaluating_run(
        session, eval_status="succeeded", rounds=rounds
    )
    interval = {"low": 20.0, "high": 33.0, "n": 2}
    results = {
        "models": [
            {"model_id": start_id, "perplexity": {**interval, "value": 30.0}},
            {"model_id": new_id, "perplexity": {**interval, "value": new_ppl}},
        ]
    }
    await session.execute(update(EvalRun).where(EvalRun.id == eval_id).values(results=results))
    await session.commit()

    def send(task: str, arg: int) -> None:
        sent.append((task, arg))

    following = await rounds_service.step(run_id, None, settings, send)
    assert following is not None and following[0] == 0.0
    seen = await rounds_service.get_run(session, run_id)
    (r1,) = seen.rounds
    assert (r1.status, r1.score, r1.start_score) == ("succeeded", new_ppl, 30.0)
    assert r1.improved is improved and seen.status == "running"
    assert await rounds_service.step(run_id, following[1], settings, send) is None
    session.expire_all()
    seen = await rounds_service.get_run(session, run_id)
    assert (seen.status, seen.stop_reason, len(seen.rounds)) == ("succeeded", stop, 1)
    assert (seen.model_id, seen.best_round) == (new_id, best_round)
    assert seen.best_model_id == (new_id if improved else start_id)
    assert sent == []  # no round 2: no datagen job was sent


@pytest.mark.parametrize("case", ["failed", "cancelled", "no score", "cancel while evaluating"])
async def test_an_eval_run_that_does_not_succeed_ends_the_rounds_run(
    session: AsyncSession, service_env: dict[str, str], case: str
) -> None:
    """A failed or cancelled eval run fails the rounds run with its reason, as does one whose
    results lack the metric; cancelling the rounds run while a round evaluates cancels the
    eval run."""
    from chatpgt.evaluation import service as eval_service
    from chatpgt.rounds import service as rounds_service
    from chatpgt.settings import get_settings

    status = {"failed": "failed", "cancelled": "cancelled", "no score": "succeeded"}.get(
        case, "queued"
    )
    error = "CUDA out of memory" if case == "failed" else None
    run_id, eval_id, _, new_id = await evaluating_run(
        session, eval_status=status, error=error, results={"models": [{"model_id": 1}]}
    )
    if case == "cancel while evaluating":
        await rounds_service.cancel(session, run_id)
        await session.commit()
    sent: list[tuple[str, int]] = []

    def send(task: str, arg: int) -> None:
        sent.append((task, arg))

    assert await rounds_service.step(run_id, None, get_settings(), send) is None
    assert sent == []
    session.expire_all()
    seen = await rounds_service.get_run(session, run_id)
    (r1,) = seen.rounds
    if case == "cancel while evaluating":
        assert (seen.status, seen.stop_reason, r1.status) == ("cancelled", "cancelled", "cancelled")
        assert (await eval_service.get_run(session, eval_id)).status == "cancelled"
        return
    assert (seen.status, seen.stop_reason, r1.status) == ("failed", "failed", "failed")
    expected = {
        "failed": f"round 1: eval run {eval_id} ended failed: CUDA out of memory",
        "cancelled": f"round 1: eval run {eval_id} ended cancelled",
        "no score": f"round 1: eval run {eval_id} has no perplexity for model {new_id}",
    }[case]
    assert seen.error is not None and seen.error.startswith(expected), seen.error
    assert r1.error == seen.error and r1.score is None and r1.improved is None
    assert seen.model_id == new_id  # the round's DPO model was registered before


async def test_a_duplicate_or_concurrent_step_does_nothing(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    service_env: dict[str, str],
) -> None:
    """Redelivery: a step message with another chain's token, or one arriving while another step
    holds the lease, moves nothing and sends nothing."""
    from chatpgt.rounds import repository as rounds_repo
    from chatpgt.rounds import service as rounds_service
    from chatpgt.settings import get_settings

    run = await rounds_repo.create_run(
        session, name="dup", request={"topic_ids": []}, start_model={"id": 1, "name": "m"}
    )
    run_id = run.id
    await rounds_repo.set_step_token(session, run_id, "live-chain")
    await session.execute(
        update(RoundsRun).where(RoundsRun.id == run_id).values(updated_at=utcnow())
    )
    await session.commit()
    sent: list[tuple[str, int]] = []
    settings = get_settings()

    def send(task: str, arg: int) -> None:
        sent.append((task, arg))

    assert await rounds_service.step(run_id, "stale-chain", settings, send) is None
    async with transaction(sessionmaker) as other:
        assert await rounds_repo.take_lease(other, run_id, "another-step", 60) == "queued"
    # The live chain looks again once the other step's lease can have run out.
    again = await rounds_service.step(run_id, "live-chain", settings, send)
    assert again == (max(settings.rounds_poll_s, settings.job_lease_s), "live-chain")
    assert sent == []
    session.expire_all()
    row = await rounds_repo.get_run(session, run_id)
    assert row is not None and row.status == "queued" and row.lease_owner == "another-step"
    assert row.step_token == "live-chain"
