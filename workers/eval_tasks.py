"""Evaluation task (queue gpu): a thin call into chatpgt.evaluation.service.

Like the training tasks it never raises (a failure is recorded on the run), and a starting gpu
worker re-enqueues evaluation runs whose worker died or whose message was lost.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from chatpgt.evaluation import service
from chatpgt.orchestration.status import RunStatus
from chatpgt.serving.service import refresh_cards
from chatpgt.settings import get_settings
from workers.app import celery_app
from workers.training_tasks import reenqueue_orphans


@celery_app.task(name=service.TASK_NAME, acks_late=True, ignore_result=True)
def run_eval(run_id: int) -> str:
    outcome = service.execute_run(run_id)
    if outcome == RunStatus.SUCCEEDED:  # the measured models' cards carry the new results
        refresh_cards(get_settings().database_url, eval_run=run_id)
    return outcome


@worker_ready.connect
def _resume_orphaned_eval_runs(sender: Any = None, **_: Any) -> None:
    reenqueue_orphans(sender, _recovery_messages, "evaluation")


def _recovery_messages() -> list[tuple[str, int, float | None]]:
    return [
        (service.TASK_NAME, run_id, wait_s + 0.5 if wait_s else None)
        for run_id, wait_s in service.recoverable_runs()
    ]
