"""Serving tasks (queue gpu): thin calls into chatpgt.serving.service.

A generation runs on a gpu worker, where models are loaded and kept between requests. Like the
training tasks it never raises (a failure is recorded on the request), and a starting gpu worker
re-enqueues requests whose worker died or whose message was lost.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from chatpgt.orchestration.tasks import GENERATE
from chatpgt.serving import service
from workers.app import celery_app
from workers.training_tasks import reenqueue_orphans


@celery_app.task(name=GENERATE, acks_late=True, ignore_result=True)
def generate(generation_id: int) -> str:
    return service.execute_generation(generation_id)


@worker_ready.connect
def _resume_orphaned_generations(sender: Any = None, **_: Any) -> None:
    reenqueue_orphans(sender, _recovery_messages, "generation")


def _recovery_messages() -> list[tuple[str, int, float | None]]:
    return [
        (GENERATE, generation_id, wait_s + 0.5 if wait_s else None)
        for generation_id, wait_s in service.recoverable_generations()
    ]
