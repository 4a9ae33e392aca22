"""A GPU worker killed mid-run: the next worker takes the run over, resumes from its last
checkpoint instead of starting again, and finishes it with every step made once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.training.models import TrainingRun
from tests import fixtures_training as ft
from tests import procs
from tests.fixtures_training import finished, sft_body, wait_run

pytestmark = pytest.mark.e2e
tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus


def steps(run: dict[str, Any]) -> int:
    return int(run["progress"].get("step") or 0)


async def wait_lease_expired(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: int, within_s: float = 30
) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        async with sessionmaker() as session:
            expired = await session.scalar(
                select(TrainingRun.lease_expires_at < func.now()).where(TrainingRun.id == run_id)
            )
        if expired:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the lease of run {run_id} never expired")


MAX_STEPS = 60
SAVE_STEPS = 3


async def test_killed_worker_run_resumes_from_last_checkpoint(
    api: httpx.AsyncClient,
    clean_db: None,
    sessionmaker: async_sessionmaker[AsyncSession],
    service_env: dict[str, str],
    log_dir: Path,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    env = ft.worker_env(service_env)
    first = procs.start_worker(env, log_dir, queue="gpu", name="gpu-first")
    second: procs.Proc | None = None
    try:
        body = sft_body(
            tiny_model_dir, essay_corpus, max_steps=MAX_STEPS, save_steps=SAVE_STEPS, epochs=50
        )
        run = (await api.post("/train/sft", json=body)).json()
        run = await wait_run(
            api,
            run["id"],
            lambda r: (steps(r) >= 7 and r["artifacts"].get("last_checkpoint")) or finished(r),
            worker=first,
        )
        assert run["status"] == "running", run
        first.kill()  # SIGKILL: no cleanup, the task stays unacknowledged in Redis
        saved = int(Path(run["artifacts"]["last_checkpoint"]).name.split("-")[1])
        await wait_lease_expired(sessionmaker, run["id"])

        # A new gpu worker re-enqueues runs whose worker died; the run resumes and finishes.
        second = procs.start_worker(env, log_dir, queue="gpu", name="gpu-second")
        run = await wait_run(api, run["id"], finished, worker=second, within_s=300)
    finally:
        first.stop()
        if second is not None:
            second.stop(timeout=30)

    assert run["status"] == "succeeded", run
    assert run["attempts"] == 2 and run["error"] is None
    resumed = run["progress"]["resumed_from_step"]
    # From the newest checkpoint on disk (the one seen before the kill, or a later one).
    assert resumed is not None and resumed >= saved >= 6, run["progress"]
    assert resumed % SAVE_STEPS == 0 and resumed < MAX_STEPS, run["progress"]
    assert steps(run) == MAX_STEPS

    # Nothing lost, nothing doubled: the final trainer state counts MAX_STEPS optimizer steps,
    # and its log holds every step once (the steps after the checkpoint that the killed worker
    # had made were dropped with it and made again, once).
    final = Path(run["artifacts"]["last_checkpoint"])
    assert final.name == f"checkpoint-{MAX_STEPS}"
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged == list(range(1, MAX_STEPS + 1))
    # One model registered for the run, and one set of samples.
    models = (await api.get("/models")).json()["items"]
    assert [m["name"] for m in models if m.get("run_id") == run["id"]] == [run["name"]]
    assert len(run["samples"]) == len(body["samples"]["prompts"])
    assert (Path(run["artifacts"]["model_dir"]) / "config.json").is_file()
