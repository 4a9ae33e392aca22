"""Training tasks (queue gpu): thin calls into chatpgt.training.service.

The gpu worker runs ``--pool solo`` with concurrency 1 and late acks. A task never raises: a run
that fails is recorded as failed on its row, so Celery has nothing to retry. When a gpu worker
starts, it re-enqueues runs whose worker died (running, lease expired); they resume from their
last checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.signals import worker_ready

from chatpgt.orchestration.status import RunStatus
from chatpgt.orchestration.tasks import TRAIN_DPO, TRAIN_SFT, training_task
from chatpgt.serving.service import refresh_cards
from chatpgt.settings import Settings, get_settings
from chatpgt.training import service
from workers.app import GPU_QUEUE, celery_app

log = logging.getLogger(__name__)


@celery_app.task(name=TRAIN_SFT, acks_late=True, ignore_result=True)
def train_sft(run_id: int) -> str:
    return _finish(run_id, service.execute_run(run_id))


@celery_app.task(name=TRAIN_DPO, acks_late=True, ignore_result=True)
def train_dpo(run_id: int) -> str:
    return _finish(run_id, service.execute_run(run_id))


def _finish(run_id: int, outcome: str) -> str:
    """A succeeded run's model gets its card (README.md) in its folder."""
    if outcome == RunStatus.SUCCEEDED:
        refresh_cards(get_settings().database_url, training_run=run_id)
    return outcome


def recovery_messages(settings: Settings | None = None) -> list[tuple[str, int, float | None]]:
    """``(task name, run id, countdown)`` for each run to re-enqueue: the run's kind names its
    task (an SFT run under ``chatpgt.train.sft``, a DPO run under ``chatpgt.train.dpo``). A run
    another live worker holds stays its own: that delivery finds the lease and does nothing."""
    return [
        (training_task(kind), run_id, wait_s + 0.5 if wait_s else None)
        for run_id, kind, wait_s in service.recoverable_runs(settings)
    ]


def reenqueue_orphans(
    sender: Any, messages: Callable[[], list[tuple[str, int, float | None]]], what: str
) -> None:
    """On a starting gpu worker: send each ``(task name, run id, countdown)`` that
    ``messages()`` returns. A run another live worker holds stays its own (that delivery finds
    the lease and does nothing)."""
    app = getattr(sender, "app", celery_app)
    if GPU_QUEUE not in app.amqp.queues.consume_from:
        return
    try:
        found = messages()
    except Exception:
        log.exception("could not look for orphaned %s runs", what)
        return
    for task, run_id, countdown in found:
        log.info("re-enqueueing %s run %s (%s) in %.0f s", what, run_id, task, countdown or 0)
        celery_app.send_task(task, args=[run_id], countdown=countdown)


@worker_ready.connect
def _resume_orphaned_runs(sender: Any = None, **_: Any) -> None:
    reenqueue_orphans(sender, recovery_messages, "training")
