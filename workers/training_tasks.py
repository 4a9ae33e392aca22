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


def reenqueue_orphans(sender: Any, find: Any, task_name: str, what: str) -> None:
    """On a starting gpu worker: send ``task_name`` again for every run ``find()`` returns as
    (id, seconds to wait). The row's kind decides the work; a run another live worker holds
    stays its own (that delivery finds the lease and does nothing)."""
    app = getattr(sender, "app", celery_app)
    if GPU_QUEUE not in app.amqp.queues.consume_from:
        return
    try:
        runs = find()
    except Exception:
        log.exception("could not look for orphaned %s runs", what)
        return
    for run_id, wait_s in runs:
        log.info("re-enqueueing %s run %s in %.0f s", what, run_id, wait_s)
        celery_app.send_task(task_name, args=[run_id], countdown=wait_s + 0.5 if wait_s else None)


@worker_ready.connect
def _resume_orphaned_runs(sender: Any = None, **_: Any) -> None:
    reenqueue_orphans(sender, service.recoverable_runs, "chatpgt.train.sft", "training")
