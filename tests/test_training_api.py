"""Training through the real API, Postgres, Redis and a Celery worker on the gpu queue.

SFT of a tiny llama on a small corpus (long essays split), then DPO on pairs written into the
datagen tables, the saved models loading with transformers.pipeline, the registry's lineage,
cancel, and the requests that must be refused.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests import fixtures_training as ft
from tests import procs
from tests.fixtures_training import (
    LONG_TITLES,
    MAX_LENGTH,
    finished,
    insert_pairs,
    sft_body,
    wait_run,
)

pytestmark = pytest.mark.e2e
# Fixtures shared by the training test modules.
tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus
gpu_worker = ft.gpu_worker
PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert needle in body["detail"], body


def steps(run: dict[str, Any]) -> int:
    return int(run["progress"].get("step") or 0)


def load_and_generate(model_dir: str) -> list[dict[str, Any]]:
    from transformers import pipeline

    generator = pipeline("text-generation", model=model_dir)
    assert generator.tokenizer.chat_template, "the saved model must carry a chat template"
    out = generator([{"role": "user", "content": "Write an essay."}], max_new_tokens=5)
    return out[0]["generated_text"]


def check_finished_artifacts(artifacts: dict[str, Any]) -> None:
    """The model directory loads with pipeline() and generates; TensorBoard logs and the last
    checkpoint's trainer state are on disk; no optimizer state, no spare checkpoint."""
    assert list(Path(artifacts["tensorboard_dir"]).rglob("events.out.tfevents.*"))
    last = Path(artifacts["last_checkpoint"])
    assert (last / "trainer_state.json").is_file()
    run_dir = Path(artifacts["run_dir"])
    assert not [p for p in run_dir.rglob("*") if p.name in ("optimizer.pt", "scheduler.pt")]
    assert [p.name for p in run_dir.glob("checkpoint-*")] == [last.name]
    assert not list(last.glob("*.safetensors"))  # the final step's weights are in model/
    assert artifacts["pruned"]["freed_mb"] > 0
    conversation = load_and_generate(artifacts["model_dir"])
    assert conversation[-1]["role"] == "assistant"


def check_cancelled_artifacts(run: dict[str, Any]) -> None:
    checkpoint = Path(run["artifacts"]["last_checkpoint"])
    # The checkpoint is taken at the step where training stopped.
    assert checkpoint.name == f"checkpoint-{run['progress']['step']}"
    assert (checkpoint / "trainer_state.json").is_file()
    # Not finished: what training on from that step needs is kept.
    assert (checkpoint / "optimizer.pt").is_file()
    assert not Path(run["artifacts"]["model_dir"]).exists()


async def test_sft_then_dpo_end_to_end(
    api: httpx.AsyncClient,
    session: AsyncSession,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    await insert_pairs(session, [8, 8, 7, 9, 3, 6.5, 6])  # 6 pairs reach confidence 6

    response = await api.post(
        "/train/sft", json={**sft_body(tiny_model_dir, essay_corpus), "name": "tiny-graham"}
    )
    assert response.status_code == 202, response.text
    sft = response.json()
    assert sft["status"] == "queued"
    assert sft["request"]["hyperparameters"]["warmup_ratio"] == 0.03  # seed defaults filled in
    assert len(sft["request"]["prompts"]["templates"]) == 3

    sft = await wait_run(api, sft["id"], finished, worker=gpu_worker)
    assert sft["status"] == "succeeded", sft["error"]
    assert sft["attempts"] == 1
    progress = sft["progress"]
    assert progress["step"] == progress["total_steps"] > 0
    assert progress["epoch"] == pytest.approx(1.0)

    # Long essays were split, none was truncated, and the split is reported.
    report = sft["data_report"]
    long_essays = report["long_essays"]
    assert long_essays["essays"] == 6
    assert long_essays["essays_split"] == len(LONG_TITLES)
    assert sorted(long_essays["split_titles"]) == sorted(LONG_TITLES)
    assert long_essays["parts_from_split_essays"] >= 2 * len(LONG_TITLES)
    assert long_essays["longest_example_tokens"] <= MAX_LENGTH
    assert report["truncated"] == 0
    assert report["essays"] == {"train": 5, "eval": 1}  # 80/20 at the essay level
    assert sft["examples"]["train"] + sft["examples"]["eval"] == long_essays["examples"]
    assert sft["examples"]["eval"] >= 1

    # The stored essay split, summarised: the held-out essay is the one the eval rows are from.
    split = sft["essay_split"]
    held = split["heldout_titles"]
    shown = ("corpus", "seed", "eval_fraction", "essays", "train_essays", "eval_essays")
    assert {k: split[k] for k in shown} == {
        "corpus": str(essay_corpus),
        "seed": 42,
        "eval_fraction": 0.2,
        "essays": 6,
        "train_essays": 5,
        "eval_essays": 1,
    }
    data = Path(sft["artifacts"]["run_dir"]) / "data"
    assert len(held) == 1 and held[0] in (data / "eval.jsonl").read_text()
    assert held[0] not in (data / "train.jsonl").read_text()

    final = sft["metrics"]["final"]
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["eval_loss"])
    # Training tokens/s, in the final metrics and the progress; no training count posing as eval.
    assert final["train_tokens"] > 0 and final["train_tokens_per_s"] > 0
    assert progress["train_tokens_per_s"] > 0
    assert "eval_num_tokens" not in final
    assert "loss" in sft["metrics"]["latest"]
    assert [s["prompt"] for s in sft["samples"]] == ['Write an essay titled "Tiny Models".']
    assert isinstance(sft["samples"][0]["text"], str)

    check_finished_artifacts(sft["artifacts"])

    # DPO from the SFT run, on the pairs in the database.
    response = await api.post(
        "/train/dpo",
        json={
            "model": sft["id"],
            "name": "tiny-graham-dpo",
            "pairs": {"min_confidence": 6},
            "hyperparameters": {
                "max_steps": 3,
                "learning_rate": 1e-4,
                "logging_steps": 1,
                "save_steps": 2,
                "max_length": 256,
                "eval_fraction": 0.2,
            },
            "samples": {"prompts": ["Write an essay on the topic: DPO"], "max_new_tokens": 6},
        },
    )
    assert response.status_code == 202, response.text
    dpo = response.json()
    assert dpo["request"]["pairs_at_submit"] == 6
    assert dpo["start_model"]["model_id"] == sft["model_id"]

    dpo = await wait_run(api, dpo["id"], finished, worker=gpu_worker)
    assert dpo["status"] == "succeeded", dpo["error"]
    assert dpo["progress"]["step"] == dpo["progress"]["total_steps"] == 3
    assert dpo["data_report"]["pairs_exported"] == 6
    assert dpo["data_report"]["reference"] == "precomputed log-probs"
    assert dpo["examples"] == {"train": 5, "eval": 1}
    assert dpo["essay_split"] is None  # DPO holds out pairs, not essays
    final = dpo["metrics"]["final"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"):
        assert math.isfinite(final[key]), key
    assert math.isfinite(final["eval_loss"])
    assert final["train_tokens"] > 0 and final["train_tokens_per_s"] > 0
    check_finished_artifacts(dpo["artifacts"])

    # The registry: base -> SFT -> DPO.
    response = await api.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["items"]}
    assert set(models) == {str(tiny_model_dir), "tiny-graham", "tiny-graham-dpo"}
    dpo_model = models["tiny-graham-dpo"]
    assert [(e["name"], e["kind"]) for e in dpo_model["lineage"]] == [
        (str(tiny_model_dir), "base"),
        ("tiny-graham", "sft"),
        ("tiny-graham-dpo", "dpo"),
    ]
    assert dpo_model["run_id"] == dpo["id"] and dpo_model["path"] == dpo["artifacts"]["model_dir"]
    assert "rewards/margins" in dpo_model["metrics"]
    assert (await api.get(f"/models/{dpo_model['id']}")).json()["lineage"] == dpo_model["lineage"]

    # DPO can also start from a registered name; a taken name is refused.
    response = await api.post("/train/dpo", json={"model": "tiny-graham", "name": "tiny-graham"})
    assert_problem(response, 409, "already registered")

    runs = (await api.get("/train/runs")).json()["items"]
    assert [r["id"] for r in runs] == [dpo["id"], sft["id"]]
    assert [r["id"] for r in (await api.get("/train/runs?kind=sft")).json()["items"]] == [sft["id"]]

    # A finished run cannot be cancelled.
    assert_problem(await api.post(f"/train/runs/{sft['id']}/cancel"), 409, "succeeded")


async def test_dpo_under_lora_uses_the_model_with_adapter_disabled_as_reference(
    api: httpx.AsyncClient,
    session: AsyncSession,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
) -> None:
    await insert_pairs(session, [7, 8, 9])
    body = {
        "model": str(tiny_model_dir),
        "name": "tiny-lora-dpo",
        "hyperparameters": {
            "max_steps": 2,
            "per_device_batch_size": 1,
            "logging_steps": 1,
            "learning_rate": 1e-3,
            "max_length": 256,
            "eval_fraction": 0,
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        },
        "samples": {"prompts": ["Write an essay on the topic: adapters"], "max_new_tokens": 4},
    }
    run = (await api.post("/train/dpo", json=body)).json()
    run = await wait_run(api, run["id"], finished, worker=gpu_worker)
    assert run["status"] == "succeeded", run["error"]
    assert run["data_report"]["reference"] == "adapter disabled (LoRA)"
    # 2 steps of 1 pair see 2 of the 3 pairs: only those are kept (and given reference
    # log-probs when they are precomputed).
    assert run["examples"] == {"train": 2, "eval": 0}
    assert run["data_report"]["pairs_beyond_max_steps"] == 1
    assert math.isfinite(run["metrics"]["final"]["rewards/margins"])
    check_merged_model(run["artifacts"]["model_dir"])
    models = (await api.get("/models")).json()["items"]
    assert [(e["name"], e["kind"]) for e in models[-1]["lineage"]] == [
        (str(tiny_model_dir), "base"),
        ("tiny-lora-dpo", "dpo"),
    ]


def check_merged_model(model_dir: str) -> None:
    """LoRA is merged into full weights: a plain model directory, no adapter files."""
    assert not (Path(model_dir) / "adapter_config.json").exists()
    assert load_and_generate(model_dir)[-1]["role"] == "assistant"


async def test_cancel_stops_at_next_step_and_keeps_checkpoint(
    api: httpx.AsyncClient,
    clean_db: None,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    body = sft_body(tiny_model_dir, essay_corpus, max_steps=5000, save_steps=3)
    run = (await api.post("/train/sft", json=body)).json()
    run = await wait_run(api, run["id"], lambda r: steps(r) >= 4 or finished(r), worker=gpu_worker)
    assert run["status"] == "running", run
    assert run["progress"]["total_steps"] == 5000
    assert run["progress"]["eta_s"] is not None

    response = await api.post(f"/train/runs/{run['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True

    run = await wait_run(api, run["id"], finished, worker=gpu_worker)
    assert run["status"] == "cancelled", run["error"]
    assert run["progress"]["step"] < 5000
    check_cancelled_artifacts(run)
    assert run["model_id"] is None
    assert (await api.get("/models")).json()["items"] == []

    again = await api.post(f"/train/runs/{run['id']}/cancel")
    assert again.status_code == 202 and again.json()["status"] == "cancelled"


async def test_worker_side_failure_fails_the_run_once(
    api: httpx.AsyncClient,
    clean_db: None,
    gpu_worker: procs.Proc,
    essay_corpus: Path,
    tmp_path: Path,
) -> None:
    """A model directory that passes the submit-time check (it has a config.json) but cannot be
    loaded fails in the worker: a failed run with the reason, one attempt, no retry loop."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    body = {"base_model": str(broken), "corpus": str(essay_corpus)}
    response = await api.post("/train/sft", json=body)
    assert response.status_code == 202, response.text
    run = await wait_run(api, response.json()["id"], finished, worker=gpu_worker)
    assert run["status"] == "failed"
    assert "broken-model" in run["error"]
    assert run["attempts"] == 1
    assert run["finished_at"] is not None


async def test_queued_run_cancels_at_once(
    api: httpx.AsyncClient, clean_db: None, tiny_model_dir: Path, essay_corpus: Path
) -> None:
    """Whether or not a worker picked it up yet, a cancelled queued run ends cancelled."""
    body = sft_body(tiny_model_dir, essay_corpus, max_steps=5000)
    run = (await api.post("/train/sft", json=body)).json()
    response = await api.post(f"/train/runs/{run['id']}/cancel")
    assert response.status_code == 202
    run = await wait_run(api, run["id"], finished, within_s=60)
    assert run["status"] == "cancelled"


async def test_bad_requests_are_problems(
    api: httpx.AsyncClient,
    session: AsyncSession,
    tiny_model_dir: Path,
    essay_corpus: Path,
    tmp_path: Path,
) -> None:
    sft = sft_body(tiny_model_dir, essay_corpus)

    response = await api.post("/train/sft", json={**sft, "base_model": "/no/such/model"})
    assert_problem(response, 400, "does not exist")
    response = await api.post("/train/sft", json={**sft, "base_model": str(tmp_path)})
    assert_problem(response, 400, "not a model directory")

    response = await api.post("/train/sft", json={**sft, "corpus": str(tmp_path / "missing.csv")})
    assert_problem(response, 400, "does not exist")
    no_columns = tmp_path / "no_columns.csv"
    with no_columns.open("w", newline="") as f:
        csv.writer(f).writerows([["name", "words"], ["a", "b"]])
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00title,text\n\x80\x81")
    parquet = tmp_path / "essays.parquet"
    parquet.write_bytes(b"PAR1")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    for corpus, needle in (
        (no_columns, "title column"),
        (binary, "cannot be read"),
        (parquet, "not a .csv"),
        (empty_dir, "no .txt or .md"),
    ):
        response = await api.post("/train/sft", json={**sft, "corpus": str(corpus)})
        assert_problem(response, 400, needle)

    # A hub id the workers cannot load (offline, not in the cache) is refused at once, for
    # training and for evaluation.
    hub_id = "chatpgt-tests/no-such-model"
    response = await api.post("/train/sft", json={**sft, "base_model": hub_id})
    assert_problem(response, 400, "not in the local cache")
    assert hub_id in response.json()["detail"] and "HF_HUB_OFFLINE" in response.json()["detail"]
    response = await api.post("/eval/runs", json={"models": [hub_id]})
    assert_problem(response, 400, "not in the local cache")

    bad_template = {**sft, "prompts": {"templates": ["Write about {topic}"]}}
    response = await api.post("/train/sft", json=bad_template)
    assert response.status_code == 422

    # DPO: zero pairs after filtering, unknown runs and paths.
    await insert_pairs(session, [3, 4])
    dpo = {"model": str(tiny_model_dir), "pairs": {"min_confidence": 6}}
    assert_problem(await api.post("/train/dpo", json=dpo), 400, "No preference pair matches")
    other_job = {"min_confidence": 1, "job_ids": [999]}
    response = await api.post("/train/dpo", json={**dpo, "pairs": other_job})
    assert_problem(response, 400, "job_ids [999]")
    for model in (424242, "/no/model"):
        response = await api.post("/train/dpo", json={**dpo, "model": model})
        assert_problem(response, 400, "does not exist")
    matching = {"model": hub_id, "pairs": {"min_confidence": 3}}
    response = await api.post("/train/dpo", json=matching)
    assert_problem(response, 400, "not in the local cache")

    assert_problem(await api.get("/train/runs/424242"), 404, "does not exist")
    assert_problem(await api.post("/train/runs/424242/cancel"), 404, "does not exist")
    assert_problem(await api.get("/models/424242"), 404, "No registered model")
    assert (await api.get("/train/runs")).json()["items"] == []
