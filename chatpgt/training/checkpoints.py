"""A run directory's ``checkpoint-N/`` folders: the newest complete one (what a resumed attempt
starts from), and what a finished run keeps of them. Torch-free: the worker prunes a succeeded
run's checkpoints after its ranks have ended.

A checkpoint of a full fine-tune holds the weights, the AdamW state (twice the weights' size in
fp32), the LR scheduler and RNG states, and ``trainer_state.json`` (the step and the log
history), which the Trainer writes last. A run that is still running, was cancelled or may be
retried needs all of it to resume. A succeeded run is never resumed and its final model is in
``model/``: it keeps its newest checkpoint's trainer state (log history, RNG states, the training
arguments) and nothing heavier.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# How the Trainer names checkpoint folders and the file it writes last into each.
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
TRAINER_STATE_NAME = "trainer_state.json"
# Written into every checkpoint of a succeeded run before anything is deleted from it: such a
# checkpoint is never resumed from (a worker that died while pruning leaves it half deleted).
PRUNED_MARKER = ".chatpgt-pruned"
# Training-only state in a checkpoint: the optimizer's and the LR scheduler's (FSDP writes
# ``optimizer_0/`` folders), needed only to train on from that step.
_OPTIMIZER_STATE = ("optimizer*", "scheduler*")
# The weights in a checkpoint (plain, sharded, FSDP, LoRA adapters): the final model's, when the
# checkpoint is at the final step, which ``model/`` holds.
_WEIGHTS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*",
    "adapter_model*",
    "model.pt",
)


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N`` folder of the run, oldest first."""
    if not run_dir.is_dir():
        return []
    return sorted(
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if path.is_dir() and (match := CHECKPOINT.fullmatch(path.name))
    )


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint of the run. The Trainer writes ``trainer_state.json``
    last, after the weights, optimizer, scheduler and RNG states, so a checkpoint without a
    readable one was cut off mid-save (the worker died there) and is skipped, not resumed."""
    for step, path in reversed(checkpoint_dirs(run_dir)):
        if (path / PRUNED_MARKER).exists():
            continue
        try:
            state = json.loads((path / TRAINER_STATE_NAME).read_text())
        except (OSError, ValueError):
            log.warning("skipping checkpoint %s: cut off before it was complete", path)
            continue
        if state.get("global_step") == step:
            return str(path)
        log.warning("skipping checkpoint %s: its trainer state is for another step", path)
    return None


def prune_finished_run(run_dir: Path, final_step: int | None) -> dict[str, Any]:
    """Free a succeeded run's checkpoints once its final model is saved in ``model/``: remove
    every checkpoint but the newest complete one, and from that one the optimizer and scheduler
    state, and its weights when it is at ``final_step`` (they are the saved model's). Returns
    what was freed, for the run's artifacts.

    Every checkpoint is marked first, so that none is resumed from once pruning has begun (the
    worker calls this before it marks the run succeeded; if it dies in between, the next
    attempt trains again from the start rather than from a checkpoint without its weights)."""
    kept = last_checkpoint(run_dir)
    for _, path in checkpoint_dirs(run_dir):
        (path / PRUNED_MARKER).touch()
    freed = 0
    removed: list[str] = []
    for _, path in checkpoint_dirs(run_dir):
        if str(path) != kept:
            freed += _size(path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    stripped: list[str] = []
    if kept is not None:
        folder = Path(kept)
        patterns: tuple[str, ...] = _OPTIMIZER_STATE
        if final_step is not None and folder.name == f"checkpoint-{final_step}":
            patterns += _WEIGHTS
        for pattern in patterns:
            for item in sorted(folder.glob(pattern)):
                freed += _size(item)
                if item.is_dir():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)
                stripped.append(item.name)
    return {
        "freed_mb": round(freed / 2**20, 1),
        "removed_checkpoints": removed,
        "stripped_from_last_checkpoint": stripped,
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
