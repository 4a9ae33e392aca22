"""Training tasks (queue gpu): thin calls into chatpgt.training.service.

The gpu worker runs ``--pool solo`` with concurrency 1 and late acks. A task never raises: a run
that fails is recorded as failed on its row, so Celery has nothing to retry. When a gpu worker
starts, it re-enqueues runs whose worker died (running, lease expired); they resume from their
last checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from chatpgt.training import service
from workers.app import GPU_QUEUE, celery_app

log = logging.getLogger(__name__)


@celery_app.task(name="chatpgt.train.sft", acks_late=True, ignore_result=True)
def train_sft(run_id: int) -> str:
    return service.execute_run(run_id)


@celery_app.task(name="chatpgt.train.dpo", acks_late=True, ignore_result=True)
def train_dpo(run_id: int) -> str:
    return service.execute_run(run_id)


@worker_ready.connect
def _resume_orphaned_runs(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", celery_app)
    if GPU_QUEUE not in app.amqp.queues.consume_from:
        return
    try:
        runs = service.recoverable_runs()
    except Exception:
        log.exception("could not look for orphaned training runs")
        return
    for run_id, wait_s in runs:
        log.info("re-enqueueing training run %s in %.0f s", run_id, wait_s)
        # The row's kind decides the recipe; the task name only routes to the gpu queue. A run
        # another live worker holds stays its own: that delivery finds the lease and does nothing.
        celery_app.send_task(
            "chatpgt.train.sft", args=[run_id], countdown=wait_s + 0.5 if wait_s else None
        )
