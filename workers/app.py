"""The Celery application. Task bodies live in workers/*_tasks.py and are thin calls into chatpgt.

Queues: ``datagen`` (I/O-bound provider fan-out, prefork) and ``gpu`` (training, ``--pool solo``,
concurrency 1). State lives in Postgres; Redis carries only the queue.

Periodic tasks run from Celery beat (``celery -A workers.app beat``, or ``worker -B`` on one
worker): the datagen orphan sweep every ``CHATPGT_JOB_SWEEP_INTERVAL_S``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from chatpgt.metrics import configure as configure_metrics
from chatpgt.orchestration.tasks import DATAGEN_SWEEP
from chatpgt.redact import install_log_redaction, known_secret_count, register_provider_keys
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
            "chatpgt.eval.*": {"queue": GPU_QUEUE},
            "chatpgt.serve.*": {"queue": GPU_QUEUE},
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
        imports=[
            "workers.datagen_tasks",
            "workers.training_tasks",
            "workers.eval_tasks",
            "workers.serving_tasks",
        ],
        beat_schedule=beat_schedule(settings.job_sweep_interval_s),
    )
    return app


def beat_schedule(sweep_interval_s: float) -> dict[str, dict[str, Any]]:
    """What Celery beat sends: the datagen orphan sweep (none when the interval is 0). A sweep
    not picked up within its interval expires, so a backlog of sweeps never builds up."""
    if sweep_interval_s <= 0:
        return {}
    return {
        "datagen-orphan-sweep": {
            "task": DATAGEN_SWEEP,
            "schedule": sweep_interval_s,
            "options": {"queue": DATAGEN_QUEUE, "expires": sweep_interval_s},
        }
    }


celery_app = make_celery()
# Before the pool forks: every pool process writes its samples there (chatpgt.metrics).
configure_metrics(get_settings().metrics_dir)

# One line per provider request is noise at hundreds of requests a second.
logging.getLogger("httpx").setLevel(logging.WARNING)


@after_setup_logger.connect
def _redact_logs(loglevel: int | None = None, **_: Any) -> None:
    """Every handler Celery installs gets the redacting filter (chatpgt.redact), so no log line
    or traceback of a worker carries a provider key. Runs in the main process, before the pool
    forks: the children inherit the filters and the known keys."""
    register_provider_keys(get_settings().provider_configs().values())
    install_log_redaction()
    if loglevel is not None and loglevel <= logging.DEBUG:
        # A worker started with --loglevel DEBUG shows the provider requests too.
        logging.getLogger("httpx").setLevel(logging.NOTSET)


@after_setup_task_logger.connect
def _redact_task_logs(**_: Any) -> None:
    # Celery's task logger has handlers of its own and does not propagate to the root.
    handlers = install_log_redaction()
    logging.getLogger(__name__).info(
        "secrets: %d provider key(s) redacted from logs and errors; filter on %d log handler(s)",
        known_secret_count(),
        handlers,
    )
