"""Celery task names, in one place: the workers register their tasks under them, the API and
the sweeps enqueue by name (the library never imports Celery)."""

from __future__ import annotations

from typing import Final

DATAGEN_RUN_JOB: Final = "chatpgt.datagen.run_job"
# The periodic sweep (Celery beat) for running jobs whose lease ran out.
DATAGEN_SWEEP: Final = "chatpgt.datagen.sweep_orphans"
# One step of a rounds run's state machine (chatpgt.rounds.service.step): cheap, on the
# datagen queue, rescheduling itself until the run is terminal.
ROUNDS_STEP: Final = "chatpgt.datagen.rounds_step"
# A near-duplicate scan (chatpgt.datasets.scans): CPU work next to the database, on the
# datagen queue; the sweep and a starting datagen worker re-enqueue one whose lease ran out.
DEDUP_SCAN: Final = "chatpgt.datagen.dedup_scan"
TRAIN_SFT: Final = "chatpgt.train.sft"
TRAIN_DPO: Final = "chatpgt.train.dpo"

EVAL_RUN: Final = "chatpgt.eval.run"
# Essays asked of a registered model (chatpgt.serving.runner): on the gpu queue, where the
# models are loaded.
GENERATE: Final = "chatpgt.serve.generate"

TRAINING_TASKS: Final = {"sft": TRAIN_SFT, "dpo": TRAIN_DPO}


def training_task(kind: str) -> str:
    """The task that runs a training run of ``kind`` ("sft" or "dpo")."""
    try:
        return TRAINING_TASKS[kind]
    except KeyError:
        raise ValueError(f"no training task for kind {kind!r}") from None
