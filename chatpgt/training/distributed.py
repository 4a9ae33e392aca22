"""Training runs across several processes: the worker launches the ranks and watches them.

A run whose request asks for more than one process (``hyperparameters.num_processes``, default
``CHATPGT_TRAIN_NUM_PROCESSES``) or for FSDP is not trained inside the Celery worker. The worker
stays the owner of the run row (it claimed it, its heartbeat thread renews the lease and reads the
cancel flag) and, after writing the run's ``data/`` once, starts ``accelerate launch`` (torchrun
underneath) in a new session: N ranks of :mod:`chatpgt.training.launch_entry`, DDP by default,
FSDP2 when asked. Rank 0 writes progress, metrics and checkpoints into the row with the worker's
lease token, saves the final model and writes ``launch/outcome.json``; the worker then registers
the model exactly as for one process.

Why FSDP2 rather than DeepSpeed ZeRO-3: both shard parameters, gradients and optimizer state,
and TRL ships accelerate configs for both; FSDP2 is part of torch (nothing more to install or
compile against the CUDA toolkit), it is the path accelerate and transformers develop first, and
its checkpoints are ordinary torch state dicts that ``Trainer`` resumes from.

No rank can hang a run: the worker polls every rank; when one exits without having finished (it
was killed, ran out of memory, raised), or the lease is lost, it kills the whole process group
(``start_new_session``), so nothing is left behind, and the run fails with which rank died and
why. Each rank kills itself when the worker is gone (it watches the worker's pid), so a worker
killed outright leaves no rank behind either. The ranks' collectives time out after
``CHATPGT_TRAIN_DIST_TIMEOUT_S`` as a last resort.

This module does not import torch: the API uses :func:`check_request` at submit time.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chatpgt.settings import Settings
from chatpgt.training.errors import RankFailed, UnsupportedDistribution
from chatpgt.training.outcome import Outcome
from chatpgt.training.reporting import LeasedReporter
from chatpgt.training.repository import RunSnapshot
from chatpgt.training.schemas import DPORequest, SFTRequest, TrainingKnobs, as_submitted

log = logging.getLogger(__name__)

# Set in the environment of every process of a launched run (its value: "<run id>:<owner>"), so
# the run's processes can be found in the process table (tests, operators).
RUN_MARKER_ENV = "CHATPGT_TRAIN_RUN_MARKER"
LAUNCH_DIR = "launch"
OUTCOME_FILE = "outcome.json"
SNAPSHOT_FILE = "snapshot.json"
_POLL_S = 0.2


# --------------------------------------------------------------------------------------------
# Submit time (API process)


def check_request(hp: TrainingKnobs, settings: Settings) -> int:
    """The number of processes the run will use; raises a 400 when the workers cannot run it.

    Refused: more processes than ``settings.max_train_processes`` (the GPUs of a gpu worker,
    ``CHATPGT_TRAIN_GPUS``, or on CPU workers ``CHATPGT_TRAIN_CPU_PROCESSES``, default the CPU
    count), FSDP on CPU workers, FSDP with LoRA (its adapter cannot be merged from shards here).
    """
    n = hp.num_processes or settings.train_num_processes
    limit = settings.max_train_processes
    where = (
        f"{settings.train_gpus} GPU(s) per gpu worker (CHATPGT_TRAIN_GPUS)"
        if settings.train_gpus
        else f"CPU workers allowing {limit} process(es) (CHATPGT_TRAIN_CPU_PROCESSES)"
    )
    if n > limit:
        raise UnsupportedDistribution(
            f"num_processes {n} is more than the devices available: {where}.",
            num_processes=n,
            max_processes=limit,
        )
    if hp.distributed == "fsdp":
        if not settings.train_gpus:
            raise UnsupportedDistribution(
                "distributed 'fsdp' needs GPU workers (CHATPGT_TRAIN_GPUS > 0); on CPU use 'ddp'.",
                distributed=hp.distributed,
            )
        if hp.lora is not None:
            raise UnsupportedDistribution(
                "distributed 'fsdp' with lora is not supported; use 'ddp' for LoRA runs.",
                distributed=hp.distributed,
            )
    return n


def run_hyperparameters(snapshot: RunSnapshot) -> TrainingKnobs:
    model = SFTRequest if snapshot.kind == "sft" else DPORequest
    return model.model_validate(as_submitted(snapshot.request)).hyperparameters


def is_multiprocess(snapshot: RunSnapshot, settings: Settings) -> bool:
    """Whether the run is launched as separate ranks instead of in the worker process."""
    hp = run_hyperparameters(snapshot)
    n = hp.num_processes or settings.train_num_processes
    return n > 1 or hp.distributed == "fsdp"


# --------------------------------------------------------------------------------------------
# The launch (worker process)


def accelerate_config(hp: TrainingKnobs, n: int, *, cuda: bool, bf16: bool) -> dict[str, Any]:
    """The accelerate config of the run (written to ``launch/accelerate_config.json``).

    On CPU the type is still MULTI_GPU: ``accelerate launch --cpu`` starts one process and expects
    mpirun for more, while its multi-GPU launcher (torchrun) starts the N ranks, which the
    Trainer's ``use_cpu`` turns into gloo ranks (accelerate's MULTI_CPU).
    """
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU",
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": n,
        "mixed_precision": "bf16" if bf16 else "no",
        "dynamo_config": {"dynamo_backend": "NO"},
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "gpu_ids": "all" if cuda else None,
    }
    if hp.distributed == "fsdp":
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": True,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            # Checkpoints stay sharded (fast to write, resumable); the final model is gathered.
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            # FSDP2 does activation checkpointing itself; the Trainer's own is turned off for it.
            "fsdp_activation_checkpointing": hp.gradient_checkpointing is not False,
        }
    return {k: v for k, v in config.items() if v is not None}


def launch_command(
    config_file: Path, port: int, run_id: int, run_dir: Path, owner: str
) -> list[str]:
    """``accelerate launch`` (its module, with this interpreter) of the run's ranks."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        "--main_process_port",
        str(port),
        # torchrun: notice a failed rank fast, never restart one behind the worker's back.
        "--monitor_interval",
        "0.5",
        "--max_restarts",
        "0",
        "-m",
        "chatpgt.training.launch_entry",
        "--run-id",
        str(run_id),
        "--run-dir",
        str(run_dir),
        "--owner",
        owner,
        "--worker-pid",
        str(os.getpid()),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    snapshot: RunSnapshot, run_dir: Path, reporter: LeasedReporter, settings: Settings
) -> Outcome:
    """Prepare the run's data once here, then train it on its ranks; rank 0's outcome.

    Raises :class:`RankFailed` when a rank died or raised (the process group is killed first).
    Returns ``Outcome("lost")`` when the lease was lost meanwhile (the ranks are killed).
    """
    import torch

    from chatpgt.training import recipes

    hp = run_hyperparameters(snapshot)
    n = hp.num_processes or settings.train_num_processes
    device = recipes.Device.detect()
    if device.cuda and n > torch.cuda.device_count():
        raise RankFailed(
            f"num_processes {n} is more than the {torch.cuda.device_count()} GPU(s) of this worker"
        )
    if hp.distributed == "fsdp" and not device.cuda:
        raise RankFailed("distributed 'fsdp' needs a GPU worker; this one has no CUDA device")
    recipes.prepare_data(snapshot, run_dir, reporter, settings.database_url)
    if reporter.should_stop:
        return Outcome("lost") if reporter.lost.is_set() else Outcome("cancelled")
    return launch(snapshot, run_dir, reporter, hp, n, cuda=device.cuda, bf16=device.bf16)


def launch(
    snapshot: RunSnapshot,
    run_dir: Path,
    reporter: LeasedReporter,
    hp: TrainingKnobs,
    n: int,
    *,
    cuda: bool,
    bf16: bool,
) -> Outcome:
    """Run the ranks of ``snapshot`` to the end and return rank 0's outcome (see :func:`run`)."""
    launch_dir = run_dir / LAUNCH_DIR
    launch_dir.mkdir(parents=True, exist_ok=True)
    for stale in (*launch_dir.glob("rank-*"), launch_dir / OUTCOME_FILE):
        stale.unlink(missing_ok=True)  # from an earlier attempt
    (launch_dir / SNAPSHOT_FILE).write_text(json.dumps(asdict(snapshot)))
    config_file = launch_dir / "accelerate_config.json"
    config_file.write_text(json.dumps(accelerate_config(hp, n, cuda=cuda, bf16=bf16), indent=2))
    argv = launch_command(config_file, _free_port(), snapshot.id, run_dir, reporter.owner)
    env = {**os.environ, RUN_MARKER_ENV: f"{snapshot.id}:{reporter.owner}"}
    if not cuda and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    reporter.report(
        artifacts={
            "launch": {
                "num_processes": n,
                "distributed": hp.distributed,
                "command": shlex.join(argv),
            }
        },
        force=True,
    )
    log.info("training run %s: launching %s processes: %s", snapshot.id, n, shlex.join(argv))
    with (launch_dir / "ranks.log").open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            died = watch(proc, n, launch_dir, stop=reporter.lost.is_set)
        finally:
            kill_group(proc)
    if reporter.lost.is_set():
        return Outcome("lost")
    if _rank0_finished(launch_dir):
        return Outcome(**json.loads((launch_dir / OUTCOME_FILE).read_text()))
    raise RankFailed(failure_reason(launch_dir, died, proc.returncode, n))


def mark_stop_on_sigterm(launch_dir: Path, rank: str) -> None:
    """In a rank: when the launcher stops it (torchrun sends SIGTERM to the ranks left once one
    failed), leave ``rank-<i>.stopped`` before dying of the signal, so the worker can tell the
    rank that died on its own from the ranks stopped after it. Under load the launcher can stop
    rank 0 before the worker's next look; without the marker both ranks were just gone, and the
    run blamed rank 0."""

    def stopped(signum: int, frame: Any) -> None:
        try:
            (launch_dir / f"rank-{rank}.stopped").touch()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, stopped)


def _marked(launch_dir: Path, rank: int, *kinds: str) -> bool:
    return any((launch_dir / f"rank-{rank}.{kind}").exists() for kind in kinds)


def _rank0_finished(launch_dir: Path) -> bool:
    """Rank 0 wrote the outcome and ended: the run's result, whatever the other ranks still do
    (they have nothing left to contribute; the group is killed)."""
    return (launch_dir / "rank-0.done").exists() and (launch_dir / OUTCOME_FILE).is_file()


def watch(
    proc: subprocess.Popen[bytes], n: int, launch_dir: Path, *, stop: Callable[[], bool]
) -> str | None:
    """Wait for the launcher to exit, or for rank 0 to have finished. Returns None, or why a rank
    is considered dead: it left the process table without its ``rank-<i>.done`` marker (SIGKILL,
    OOM, a crash) while the launcher still ran. Returns early (None) when ``stop()`` is true
    (the lease was lost)."""
    import psutil

    seen: dict[int, psutil.Process] = {}
    while proc.poll() is None:
        if stop() or _rank0_finished(launch_dir):
            return None
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                rank = _rank_of(child)
                if rank is not None and rank not in seen:
                    seen[rank] = child
        except psutil.NoSuchProcess:
            pass
        dead = [
            (rank, child)
            for rank, child in sorted(seen.items())
            if _gone(child) and not _marked(launch_dir, rank, "done")
        ]
        # A rank that died without raising (SIGKILL, OOM) is the cause; the ranks that raised
        # in the same moment only lost their peer (gloo: "Connection closed by peer"), and those
        # the launcher stopped (rank-<i>.stopped) were stopped because of it.
        for rank, child in dead:
            if not _marked(launch_dir, rank, "error", "stopped"):
                return f"rank {rank} (pid {child.pid}) died"
        raised = [rank for rank, _ in dead if _marked(launch_dir, rank, "error")]
        if raised:
            return f"rank {raised[0]} raised"
        # Only stopped ranks gone so far: the cause is still to be seen (or the launcher exits).
        time.sleep(_POLL_S)
    return None


def _rank_of(process: Any) -> int | None:
    import psutil

    try:
        rank = process.environ().get("RANK")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return int(rank) if rank is not None and rank.isdigit() else None


def _gone(process: Any) -> bool:
    import psutil

    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the launcher's whole session (launcher and every rank) and reap the launcher."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        log.error("launcher %s did not exit after SIGKILL", proc.pid)


def failure_reason(
    launch_dir: Path, died: str | None, returncode: int | None, n: int | None = None
) -> str:
    """The error of a failed multi-process run: the first rank's exception when one raised,
    else which rank died, else the launcher's exit status, with the tail of the ranks' log."""
    errors = sorted(launch_dir.glob("rank-*.error"))
    if died is None and n is not None:
        # The launcher may exit (a rank failed) before the watcher saw which: a rank with
        # neither a done nor an error marker left without raising (SIGKILL, OOM): the cause.
        silent = [r for r in range(n) if not _marked(launch_dir, r, "done", "error", "stopped")]
        if silent and len(silent) < n:
            died = f"rank {silent[0]} died"
    if errors and not (died and died.endswith(" died")):
        rank = errors[0].name.split(".")[0]
        return f"{rank} failed: {errors[0].read_text().strip()}"
    if returncode is not None and returncode < 0:
        status = f"the launcher was killed by {signal.Signals(-returncode).name}"
    else:
        status = f"the launcher exited with status {returncode}"
    tail = _tail(launch_dir / "ranks.log")
    first = died or "a rank stopped before the run finished"
    after = ""
    if errors:  # the ranks that raised once their peer was gone
        lines = errors[0].read_text().strip().splitlines()
        after = f" Then {errors[0].name.split('.')[0]} failed: {lines[0] if lines else ''}"
    return f"{first} ({status}); the other ranks were stopped.{after}\n{tail}".strip()


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
