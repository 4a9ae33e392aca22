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
# TRL logs its running count of *training* tokens under the eval prefix too: not an eval figure.
NOT_EVAL_METRICS = frozenset({"eval_num_tokens"})


class RunProgressCallback(TrainerCallback):
    """Reports step / total / epoch / ETA / training tokens/s and the latest logged metrics into
    the run row, and stops training at the next step when the run is cancelled (saving a
    checkpoint there) or when this worker lost the run's lease (saving nothing: another worker
    owns the run now).

    Tokens/s counts the non-padding tokens the Trainer fed to the model in training steps
    (``include_num_input_tokens_seen="non_padding"``: prompt and completion, both sides of a DPO
    pair) in this attempt, over this attempt's wall time minus the held-out evaluation passes it
    made (checkpoint saves and logging stay in: they are the run's own overhead)."""

    def __init__(
        self,
        reporter: Reporter,
        latest: dict[str, Any] | None = None,
        *,
        lean_final_save: bool = True,
    ) -> None:
        self.reporter = reporter
        self.lean_final_save = lean_final_save
        self.latest: dict[str, Any] = dict(latest or {})
        self._t0 = time.monotonic()
        self._step0 = 0
        self._eval_done = 0
        self._tokens0 = 0
        self.eval_s = 0.0
        self.evaluations = 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._t0 = time.monotonic()
        self._step0 = state.global_step
        self._tokens0 = state.num_input_tokens_seen
        self.eval_s = 0.0
        self.evaluations = 0
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

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.reporter.report(progress={"stage": "saving the model and writing samples"}, force=True)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        last = state.max_steps > 0 and state.global_step >= state.max_steps
        if last and self.lean_final_save:
            # The checkpoint of the last step needs no optimizer, scheduler or RNG state: a
            # resume from it trains no further step. Not writing them saves twice the weights'
            # size of disk writes (AdamW's two moments), which a succeeded run deletes anyway.
            # Decided from the step alone, so every rank of a multi-process run agrees.
            args.save_only_model = True
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
            if isinstance(v, int | float)
            and math.isfinite(v)
            and k.startswith(_KEEP)
            and k not in NOT_EVAL_METRICS
        }
        if not values:
            return
        self.latest.update(values)
        self.latest["step"] = state.global_step
        self.reporter.report(metrics={"latest": dict(self.latest)}, force=True)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        self.evaluations += 1
        runtime = (metrics or {}).get("eval_runtime")
        if isinstance(runtime, int | float) and math.isfinite(runtime):
            self.eval_s += float(runtime)
        self._eval_done = 0
        self.reporter.report(progress={"stage": "training"}, force=True)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        # A run stopped before its last step (cancelled, lease lost) still ends its epoch: no
        # held-out pass for it (it would delay the cancel by a whole evaluation). Decided from
        # the control flags, which every rank of a multi-process run shares (RankSync), never
        # from the reporter, which rank 0 alone reads.
        if control.should_training_stop and state.global_step < state.max_steps:
            control.should_evaluate = False

    def throughput(self, state: TrainerState) -> dict[str, float | int]:
        """``train_tokens`` (this attempt's) and ``train_tokens_per_s`` (see the class doc)."""
        tokens = state.num_input_tokens_seen - self._tokens0
        seconds = time.monotonic() - self._t0 - self.eval_s
        out: dict[str, float | int] = {"train_tokens": int(tokens)}
        if tokens > 0 and seconds > 0:
            out["train_tokens_per_s"] = round(tokens / seconds, 2)
        return out

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
            **(self.throughput(state) if done > 0 else {}),
        }

    def _maybe_stop(self, control: TrainerControl) -> None:
        if self.reporter.lost.is_set():
            control.should_training_stop = True
        elif self.reporter.cancelled.is_set():
            control.should_training_stop = True
            control.should_save = True
