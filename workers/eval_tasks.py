"""Evaluation task (queue gpu): a thin call into chatpgt.evaluation.service.

Like the training tasks it never raises (a failure is recorded on the run), and a starting gpu
worker re-enqueues evaluation runs whose worker died or whose message was lost.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from chatpgt.evaluation import service
from workers.app import GPU_QUEUE, celery_app

log = logging.getLogger(__name__)


@celery_app.task(name=service.TASK_NAME, acks_late=True, ignore_result=True)
def run_eval(run_id: int) -> str:
    return service.execute_run(run_id)


@worker_ready.connect
def _resume_orphaned_eval_runs(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", celery_app)
    if GPU_QUEUE not in app.amqp.queues.consume_from:
        return
    try:
        runs = service.recoverable_runs()
    except Exception:
        log.exception("could not look for orphaned evaluation runs")
        return
    for run_id, wait_s in runs:
        log.info("re-enqueueing evaluation run %s in %.0f s", run_id, wait_s)
        celery_app.send_task(
            service.TASK_NAME, args=[run_id], countdown=wait_s + 0.5 if wait_s else None
        )
