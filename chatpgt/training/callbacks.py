"""The TrainerCallback that ties a Trainer to its run row: progress, metrics, cancel, lease.

Worker only (imports transformers). Database writes go through the run's
:class:`chatpgt.training.reporting.Reporter`, which this callback calls from the training thread.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from chatpgt.training.reporting import Reporter

_KEEP = ("loss", "eval_", "rewards/", "logps/", "learning_rate", "grad_norm", "epoch", "entropy")


class RunProgressCallback(TrainerCallback):
    """Reports step / total / epoch / ETA and the latest logged metrics into the run row, and
    stops training at the next step when the run is cancelled (saving a checkpoint there) or
    when this worker lost the run's lease (saving nothing: another worker owns the run now)."""

    def __init__(self, reporter: Reporter, latest: dict[str, Any] | None = None) -> None:
        self.reporter = reporter
        self.latest: dict[str, Any] = dict(latest or {})
        self._t0 = time.monotonic()
        self._step0 = 0
        self._eval_done = 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._t0 = time.monotonic()
        self._step0 = state.global_step
        progress = self._progress(state)
        progress["stage"] = "training"
        progress["resumed_from_step"] = state.global_step or None
        self.reporter.report(progress=progress, force=True)
        self._maybe_stop(control)

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        """An evaluation batch done: the held-out pass is shown, not a silent stretch."""
        loader = kw.get("eval_dataloader")
        total = len(loader) if loader is not None and hasattr(loader, "__len__") else None
        self._eval_done += 1
        self.reporter.report(
            progress={"stage": "evaluating", "eval_batches": self._eval_done, "eval_total": total}
        )

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._eval_done = 0
        self.reporter.report(progress={"stage": "training"}, force=True)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.reporter.report(progress={"stage": "saving the model and writing samples"}, force=True)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        last = state.max_steps > 0 and state.global_step >= state.max_steps
        self.reporter.report(progress=self._progress(state), force=last)
        self._maybe_stop(control)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        values = {
            k: float(v)
            for k, v in (logs or {}).items()
            if isinstance(v, int | float) and math.isfinite(v) and k.startswith(_KEEP)
        }
        if not values:
            return
        self.latest.update(values)
        self.latest["step"] = state.global_step
        self.reporter.report(metrics={"latest": dict(self.latest)}, force=True)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        checkpoint = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        self.reporter.report(artifacts={"last_checkpoint": str(checkpoint)}, force=True)

    def _progress(self, state: TrainerState) -> dict[str, Any]:
        done = state.global_step - self._step0
        total = state.max_steps or None
        eta = None
        if done > 0 and total:
            eta = round((total - state.global_step) * (time.monotonic() - self._t0) / done, 1)
        return {
            "step": state.global_step,
            "total_steps": total,
            "epoch": round(state.epoch, 4) if state.epoch is not None else None,
            "eta_s": eta,
        }

    def _maybe_stop(self, control: TrainerControl) -> None:
        if self.reporter.lost.is_set():
            control.should_training_stop = True
        elif self.reporter.cancelled.is_set():
            control.should_training_stop = True
            control.should_save = True
