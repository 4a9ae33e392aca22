"""The Celery application. Task bodies live in workers/*_tasks.py and are thin calls into chatpgt.

Queues: ``datagen`` (I/O-bound provider fan-out, prefork) and ``gpu`` (training, ``--pool solo``,
concurrency 1). State lives in Postgres; Redis carries only the queue.
"""

from __future__ import annotations

import logging

from celery import Celery

from chatpgt.settings import get_settings

DATAGEN_QUEUE = "datagen"
GPU_QUEUE = "gpu"


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("chatpgt", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        # A worker process that dies (SIGKILL, OOM) puts its task back on the queue.
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=DATAGEN_QUEUE,
        task_routes={
            "chatpgt.datagen.*": {"queue": DATAGEN_QUEUE},
            "chatpgt.train.*": {"queue": GPU_QUEUE},
        },
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            **(
                {"global_keyprefix": settings.broker_key_prefix}
                if settings.broker_key_prefix
                else {}
            ),
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        imports=["workers.datagen_tasks", "workers.training_tasks"],
    )
    return app


celery_app = make_celery()

# One line per provider request is noise at hundreds of requests a second.
logging.getLogger("httpx").setLevel(logging.WARNING)
