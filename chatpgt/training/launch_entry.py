"""One rank of a multi-process training run: ``accelerate launch -m chatpgt.training.launch_entry``.

Started by :func:`chatpgt.training.distributed.launch` in the gpu worker, never by hand (the
worker holds the run's lease). Every rank runs the same recipe (:mod:`chatpgt.training.recipes`)
on the data the worker already wrote. Rank 0 reports into the run row with the worker's lease
token and writes ``launch/outcome.json``; the others report nothing. Each rank leaves
``launch/rank-<i>.done`` when it ends normally, or ``launch/rank-<i>.error`` with its exception,
so the worker can tell a rank that finished from one that died.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from chatpgt.settings import get_settings
from chatpgt.training import recipes
from chatpgt.training.distributed import (
    LAUNCH_DIR,
    OUTCOME_FILE,
    SNAPSHOT_FILE,
    mark_stop_on_sigterm,
)
from chatpgt.training.execution import RunReporter, describe, make_sync_engine
from chatpgt.training.repository import RunSnapshot, RunStore


class SilentReporter(RunReporter):
    """The reporter of ranks other than 0: the row is rank 0's to write."""

    def report(self, *, force: bool = False, **columns: dict[str, Any]) -> None:
        return None


class RankSync(TrainerCallback):
    """Makes every rank take rank 0's decisions: stop (cancel, lost lease), save, and whether the
    run was stopped (so that no rank goes on to the final evaluation alone).

    Only rank 0 reads the run row, so without this a cancel would stop rank 0 alone and leave the
    others waiting in their next collective. Runs after the progress callback at the two points
    where it may stop training; one tiny broadcast per step.
    """

    def __init__(self, reporter: RunReporter) -> None:
        self.reporter = reporter

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._sync(control)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._sync(control)

    def _sync(self, control: TrainerControl) -> None:
        flags = torch.tensor(
            [
                int(control.should_training_stop),
                int(control.should_save),
                int(self.reporter.should_stop),
            ],
            device=PartialState().device,
        )
        flags = broadcast(flags, from_process=0)
        control.should_training_stop = bool(flags[0])
        control.should_save = bool(flags[1])
        if bool(flags[2]) and not self.reporter.should_stop:
            self.reporter.cancelled.set()


def exit_with_worker(worker_pid: int, interval_s: float = 0.5) -> None:
    """Kill this rank as soon as the worker that launched the run is gone (SIGKILLed, OOM): the
    ranks run in a session of their own, so nothing else would stop them, and a rank left
    running would write into the run directory another worker resumes from."""
    import psutil

    def watch() -> None:
        while True:
            try:
                alive = psutil.Process(worker_pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--owner", required=True, help="the worker's lease token")
    parser.add_argument("--worker-pid", type=int, help="die with this process (the worker)")
    args = parser.parse_args(argv)
    if args.worker_pid is not None:
        exit_with_worker(args.worker_pid)
    settings = get_settings()
    launch_dir = args.run_dir / LAUNCH_DIR
    mark_stop_on_sigterm(launch_dir, os.environ.get("RANK", "0"))
    # The process group is made here, with a short timeout; the Trainer's state reuses it.
    state = PartialState(
        cpu=not torch.cuda.is_available(),
        timeout=timedelta(seconds=settings.train_dist_timeout_s),
    )
    rank = state.process_index
    snapshot = RunSnapshot(**json.loads((launch_dir / SNAPSHOT_FILE).read_text()))
    engine = make_sync_engine(settings) if state.is_main_process else None
    try:
        store = RunStore(engine) if engine is not None else None
        reporter_type = RunReporter if store is not None else SilentReporter
        reporter = reporter_type(store, args.run_id, args.owner)  # type: ignore[arg-type]
        outcome = recipes.run(
            snapshot, args.run_dir, reporter, settings.database_url, callbacks=[RankSync(reporter)]
        )
        if state.is_main_process:
            tmp = launch_dir / f"{OUTCOME_FILE}.tmp"
            tmp.write_text(json.dumps(asdict(outcome)))
            os.replace(tmp, launch_dir / OUTCOME_FILE)
    except Exception as exc:
        (launch_dir / f"rank-{rank}.error").write_text(describe(exc))
        raise
    finally:
        if engine is not None:
            engine.dispose()
    (launch_dir / f"rank-{rank}.done").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
