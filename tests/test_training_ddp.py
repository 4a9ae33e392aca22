"""Multi-process training (accelerate launch, DDP on gloo) through the real API and gpu worker.

Two processes with the same global batch as one (per-device batch halved) follow the same loss
curve, step for step; one model is registered and one set of checkpoints written per run. A
cancel stops every rank at the same step with a checkpoint; a rank killed with SIGKILL fails the
run within seconds, and no process of the run is left in the process table. Requests the workers
cannot run (more processes than allowed, FSDP on CPU, zero processes) are refused at submit time.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.training.distributed import RUN_MARKER_ENV
from tests import fixtures_training as ft
from tests import procs
from tests.fixtures_training import finished, insert_pairs, sft_body, wait_run

pytestmark = pytest.mark.e2e
tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus
PROBLEM = "application/problem+json"
# CPU workers here may run 2 processes per run, whatever the machine's core count.
CPU_PROCESSES = 2
# fp32 on CPU: the two setups differ only in how the same sums are split and reduced (a batch of
# 2 on one process vs. 1 + 1 all-reduced, padding vs. none), a few ulps per step; 1e-4 relative
# is orders of magnitude above that and far below a real difference (another batch, another
# learning rate or a missed all-reduce move it by 1e-4 to 1e-2).
LOSS_RTOL = 2e-5


@pytest.fixture(scope="module")
def ddp_env(service_env: dict[str, str]) -> dict[str, str]:
    return {**ft.worker_env(service_env), "CHATPGT_TRAIN_CPU_PROCESSES": str(CPU_PROCESSES)}


@pytest.fixture(scope="module")
def ddp_api_url(ddp_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    proc, base = procs.start_api(ddp_env, log_dir)
    yield base
    proc.stop()


@pytest.fixture
async def api(ddp_api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ddp_api_url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def gpu_worker(ddp_env: dict[str, str], log_dir: Path) -> Iterator[procs.Proc]:
    proc = procs.start_worker(ddp_env, log_dir, queue="gpu", name="gpu-ddp")
    yield proc
    proc.stop(timeout=30)


def run_processes(run_id: int) -> list[psutil.Process]:
    """Every process on this machine carrying the run's marker in its environment (and this
    session's database: a parallel test session numbers its runs from 1 too)."""
    database = os.environ["CHATPGT_DATABASE_URL"]
    found = []
    for process in psutil.process_iter():
        try:
            env = process.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        marker = env.get(RUN_MARKER_ENV, "")
        if marker.startswith(f"{run_id}:") and env.get("CHATPGT_DATABASE_URL") == database:
            found.append(process)
    return found


def assert_no_processes_left(run_id: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while run_processes(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [(p.pid, p.name()) for p in run_processes(run_id)]
    assert not left, f"processes of run {run_id} left behind: {left}"


def loss_curve(run: dict[str, Any]) -> list[tuple[int, float]]:
    """(step, loss) of every logged training step, from the run's last checkpoint."""
    checkpoint = Path(run["artifacts"]["last_checkpoint"])
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]


def rng_states(checkpoint: str) -> list[str]:
    return sorted(p.name for p in Path(checkpoint).glob("rng_state*"))


def checkpoint_files(checkpoint: str) -> list[str]:
    return sorted(p.name for p in Path(checkpoint).iterdir())


def checkpoints(run: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in Path(run["artifacts"]["run_dir"]).glob("checkpoint-*"))


def assert_same_curve(one: dict[str, Any], two: dict[str, Any]) -> None:
    a, b = loss_curve(one), loss_curve(two)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 3, (a, b)
    for (step, x), (_, y) in zip(a, b, strict=True):
        assert math.isclose(x, y, rel_tol=LOSS_RTOL), f"step {step}: {x} vs {y} ({a} vs {b})"
    # Training moved the loss: the comparison is of a curve, not of one constant.
    assert a[0][1] != a[-1][1]


async def train(api: httpx.AsyncClient, kind: str, body: dict[str, Any], worker: procs.Proc) -> Any:
    response = await api.post(f"/train/{kind}", json=body)
    assert response.status_code == 202, response.text
    run = await wait_run(api, response.json()["id"], finished, worker=worker, within_s=300)
    assert run["status"] == "succeeded", run["error"]
    assert_no_processes_left(run["id"])
    return run


async def test_two_processes_follow_the_loss_curve_of_one(
    api: httpx.AsyncClient,
    session: AsyncSession,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    await insert_pairs(session, [8, 8, 7, 9, 6.5, 6])
    common = {"max_steps": 4, "save_steps": 2, "eval_fraction": 0.2}
    one = await train(
        api,
        "sft",
        {
            **sft_body(tiny_model_dir, essay_corpus, per_device_batch_size=2, **common),
            "name": "sft-one",
        },
        gpu_worker,
    )
    two = await train(
        api,
        "sft",
        {
            **sft_body(
                tiny_model_dir, essay_corpus, per_device_batch_size=1, num_processes=2, **common
            ),
            "name": "sft-two",
        },
        gpu_worker,
    )
    assert one["request"]["hyperparameters"]["num_processes"] == 1
    assert two["request"]["hyperparameters"]["num_processes"] == 2
    assert two["artifacts"]["launch"]["num_processes"] == 2
    assert "accelerate.commands.launch" in two["artifacts"]["launch"]["command"]
    assert_same_curve(one, two)
    assert two["progress"]["step"] == two["progress"]["total_steps"] == 4
    assert math.isclose(
        one["metrics"]["final"]["eval_loss"], two["metrics"]["final"]["eval_loss"], rel_tol=1e-3
    )
    # One set of checkpoints, rank 0's (each rank adds only its RNG state, see the cancel test);
    # the run succeeded, so the last step's alone is left, with its trainer state and nothing
    # a resume would need (none will happen).
    assert checkpoints(two) == ["checkpoint-4"]
    kept = checkpoint_files(two["artifacts"]["last_checkpoint"])
    assert "trainer_state.json" in kept
    assert not [name for name in kept if name.startswith(("optimizer", "scheduler", "rng_state"))]
    assert len(two["samples"]) == 1 and isinstance(two["samples"][0]["text"], str)

    dpo_common = {
        "max_steps": 3,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 3,
        "max_length": 256,
        "eval_fraction": 0,
    }
    samples = {"prompts": ["Write an essay on the topic: ranks"], "max_new_tokens": 4}
    dpo_one = await train(
        api,
        "dpo",
        {
            "model": one["id"],
            "name": "dpo-one",
            "hyperparameters": {**dpo_common, "per_device_batch_size": 2},
            "samples": samples,
        },
        gpu_worker,
    )
    dpo_two = await train(
        api,
        "dpo",
        {
            "model": one["id"],
            "name": "dpo-two",
            "hyperparameters": {**dpo_common, "per_device_batch_size": 1, "num_processes": 2},
            "samples": samples,
        },
        gpu_worker,
    )
    assert_same_curve(dpo_one, dpo_two)
    assert dpo_two["data_report"]["reference"] == "precomputed log-probs"
    assert checkpoints(dpo_two) == ["checkpoint-3"]
    for key in ("rewards/chosen", "rewards/margins"):
        assert math.isclose(
            dpo_one["metrics"]["final"][key], dpo_two["metrics"]["final"][key], rel_tol=1e-3
        ), key

    # One model per run; the 2-process ones load and generate like the others.
    models = (await api.get("/models")).json()["items"]
    by_run = [m["run_id"] for m in models if m["run_id"] is not None]
    assert sorted(by_run) == sorted(r["id"] for r in (one, two, dpo_one, dpo_two))
    lineage = next(m for m in models if m["name"] == "dpo-two")["lineage"]
    assert [e["name"] for e in lineage] == [str(tiny_model_dir), "sft-one", "dpo-two"]
    from tests.test_training_api import load_and_generate

    assert load_and_generate(dpo_two["artifacts"]["model_dir"])[-1]["role"] == "assistant"


async def start_long_run(
    api: httpx.AsyncClient, worker: procs.Proc, model_dir: Path, corpus: Path, until_step: int
) -> Any:
    """A 2-process SFT run of 5000 steps, once it has made ``until_step`` steps."""
    body = sft_body(
        model_dir, corpus, per_device_batch_size=1, num_processes=2, max_steps=5000, save_steps=1000
    )
    run = (await api.post("/train/sft", json=body)).json()
    run = await wait_run(
        api,
        run["id"],
        lambda r: (r["progress"].get("step") or 0) >= until_step or finished(r),
        worker=worker,
        within_s=180,
    )
    assert run["status"] == "running", run
    return run


async def test_cancel_stops_every_rank_at_one_step(
    api: httpx.AsyncClient,
    clean_db: None,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    run = await start_long_run(api, gpu_worker, tiny_model_dir, essay_corpus, until_step=3)
    assert (await api.post(f"/train/runs/{run['id']}/cancel")).status_code == 202
    run = await wait_run(api, run["id"], finished, worker=gpu_worker, within_s=60)
    assert run["status"] == "cancelled", run["error"]
    checkpoint = Path(run["artifacts"]["last_checkpoint"])
    assert checkpoint.name == f"checkpoint-{run['progress']['step']}"
    assert rng_states(str(checkpoint)) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert run["model_id"] is None
    assert_no_processes_left(run["id"])


async def test_killed_rank_fails_the_run_and_leaves_no_process(
    api: httpx.AsyncClient,
    clean_db: None,
    gpu_worker: procs.Proc,
    tiny_model_dir: Path,
    essay_corpus: Path,
) -> None:
    run = await start_long_run(api, gpu_worker, tiny_model_dir, essay_corpus, until_step=2)
    ranks = {
        p.environ().get("RANK"): p for p in run_processes(run["id"]) if p.environ().get("RANK")
    }
    assert set(ranks) == {"0", "1"}, ranks
    os.kill(ranks["1"].pid, signal.SIGKILL)
    killed_at = time.monotonic()

    run = await wait_run(api, run["id"], finished, worker=gpu_worker, within_s=30)
    took = time.monotonic() - killed_at
    assert run["status"] == "failed", run
    assert "rank 1" in run["error"] and "died" in run["error"], run["error"]
    # Well within the lease (CHATPGT_JOB_LEASE_S=4 in the tests): the worker noticed, nobody
    # waited for a collective to time out.
    assert took < 15, took
    assert run["attempts"] == 1
    assert_no_processes_left(run["id"])
    assert gpu_worker.alive()

    # The worker goes on: the next run trains.
    ok = await train(
        api,
        "sft",
        sft_body(
            tiny_model_dir, essay_corpus, per_device_batch_size=1, num_processes=2, max_steps=2
        ),
        gpu_worker,
    )
    assert ok["progress"]["step"] == 2


async def test_requests_the_workers_cannot_run_are_refused(
    api: httpx.AsyncClient, session: AsyncSession, tiny_model_dir: Path, essay_corpus: Path
) -> None:
    await insert_pairs(session, [8, 9])

    def sft(**hp: Any) -> dict[str, Any]:
        return sft_body(tiny_model_dir, essay_corpus, **hp)

    for kind, body, status, needle in (
        ("sft", sft(num_processes=CPU_PROCESSES + 1), 400, "more than the devices available"),
        ("sft", sft(num_processes=2, distributed="fsdp"), 400, "needs GPU workers"),
        ("sft", sft(distributed="fsdp"), 400, "needs GPU workers"),
        (
            "dpo",
            {"model": str(tiny_model_dir), "hyperparameters": {"num_processes": 64}},
            400,
            "CHATPGT_TRAIN_CPU_PROCESSES",
        ),
        ("sft", sft(num_processes=0), 422, ""),
        ("sft", sft(distributed="zero3"), 422, ""),
    ):
        response = await api.post(f"/train/{kind}", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        assert needle in response.json().get("detail", ""), response.json()
    assert (await api.get("/train/runs")).json()["items"] == []
