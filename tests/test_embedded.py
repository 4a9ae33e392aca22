"""Embedded mode: with an in-memory broker the API runs the same Celery tasks in a worker thread,
so a job finishes with no separate worker process and no Redis queue."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import procs
from tests.datagen_helpers import job_body, wait_job
from tests.fixtures_training import essay_corpus, finished, sft_body, tiny_model_dir, wait_run

__all__ = ["essay_corpus", "tiny_model_dir"]  # fixtures used below

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def embedded_api(
    service_env: dict[str, str], log_dir: Path, fake_provider: str
) -> Iterator[tuple[str, procs.Proc]]:
    env = {**service_env, "CHATPGT_BROKER_URL": "memory://"}
    env.pop("CHATPGT_RATE_LIMIT_REDIS_URL", None)
    proc, base = procs.start_api(env, log_dir)
    yield base, proc
    proc.stop()


async def test_a_job_runs_in_the_api_process(
    embedded_api: tuple[str, procs.Proc], clean_db: None
) -> None:
    # The broker is in this API process's memory: no other worker could have run the job.
    base, _ = embedded_api
    async with httpx.AsyncClient(base_url=base, timeout=30) as api:
        body = job_body(["Embedded one", "Embedded two"])
        job = (await api.post("/datagen/jobs", json=body)).json()
        done = await wait_job(api, job["id"], within_s=60)
        assert done["status"] == "succeeded", done
        assert done["generations"]["done"] == 4 and done["pairs"] >= 1
        pairs = (await api.get("/pairs", params={"job_id": job["id"]})).json()["items"]
        assert len(pairs) == done["pairs"]


@pytest.fixture(scope="module")
def sqlite_embedded_api(
    tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[tuple[str, procs.Proc]]:
    """The API on the embedded defaults: no database or broker configured (SQLite in the
    working directory, in-memory broker, worker thread), only the local provider."""
    work = tmp_path_factory.mktemp("embedded")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHATPGT_") and k not in ("FAKE_PROVIDER_KEY",)
    }
    env.update(
        CHATPGT_DATABASE_URL=f"sqlite+aiosqlite:///{work / 'chatpgt.db'}",
        CHATPGT_ARTIFACTS_DIR=str(work / "artifacts"),
        CHATPGT_MODEL_CACHE_DIR=str(work / "models"),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    proc, base = procs.start_api(env, log_dir)
    yield base, proc
    proc.stop()


async def test_embedded_defaults_run_the_pipeline_with_a_local_model(
    sqlite_embedded_api: tuple[str, procs.Proc], tiny_model_dir: Path, essay_corpus: Path
) -> None:
    """SQLite, the in-process worker, the local provider and the probability judge, through the
    API: topics → essays → judgments → pairs → SFT → DPO, and the trained model loads."""
    base, proc = sqlite_embedded_api
    model = str(tiny_model_dir)
    async with httpx.AsyncClient(base_url=base, timeout=60) as api:
        created = await api.post("/topics", json={"titles": ["Tiny essays", "Small models"]})
        assert created.status_code == 200 and created.json()["created"] == 2, created.text
        body = {
            "topics": {"titles": ["Tiny essays", "Small models"]},
            "generators": [
                {"provider": "local", "model": model, "temperature": 0.7, "max_tokens": 12},
                {"provider": "local", "model": model, "temperature": 1.2, "max_tokens": 12},
            ],
            # A random model puts almost nothing on "A"/"B": accept whatever mass it gives.
            "judge": {
                "provider": "local",
                "model": model,
                "method": "ab_probability",
                "min_letter_mass": 0.0,
            },
            "pairing": "all_pairs",
        }
        job = (await api.post("/datagen/jobs", json=body)).json()
        done = await wait_job(api, job["id"], within_s=180)
        assert done["status"] == "succeeded", (done, proc.log()[-3000:])
        assert done["generations"]["done"] == 4
        assert done["judgments"]["done"] == 4
        assert done["pairs"] >= 1, done  # averaged probabilities decide unless exactly 0.5
        export = await api.get("/pairs/export", params={"format": "jsonl"})
        assert export.status_code == 200 and export.text.count("\n") == done["pairs"]

        sft = await api.post("/train/sft", json=sft_body(tiny_model_dir, essay_corpus, max_steps=2))
        assert sft.status_code == 202, sft.text
        sft_run = await wait_run(api, sft.json()["id"], finished, within_s=240)
        assert sft_run["status"] == "succeeded", sft_run
        dpo = await api.post(
            "/train/dpo",
            json={
                "model": sft_run["id"],
                "pairs": {"min_confidence": 0},
                "hyperparameters": {"max_steps": 1, "max_length": 128, "eval_fraction": 0},
                "samples": {"prompts": ["Write an essay."], "max_new_tokens": 4},
            },
        )
        assert dpo.status_code == 202, dpo.text
        dpo_run = await wait_run(api, dpo.json()["id"], finished, within_s=240)
        assert dpo_run["status"] == "succeeded", dpo_run
        model_dir = dpo_run["artifacts"]["model_dir"]

        # The trained model, by its registry name, writes on-policy candidates.
        on_policy = {
            **body,
            "topics": {"titles": ["Tiny essays"]},
            "generators": [
                {"provider": "local", "model": dpo_run["name"], "temperature": t, "max_tokens": 8}
                for t in (0.7, 1.0)
            ],
        }
        again = (await api.post("/datagen/jobs", json=on_policy)).json()
        again = await wait_job(api, again["id"], within_s=120)
        assert again["status"] == "succeeded", again
        assert again["generations"]["done"] == 2

    from transformers import pipeline

    generate = pipeline("text-generation", model=model_dir)
    out = generate([{"role": "user", "content": "Write an essay."}], max_new_tokens=4)
    assert out and out[0]["generated_text"]
