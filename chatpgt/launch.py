"""The command lines that start the service's processes, by module name.

The library never imports the ``api`` or ``workers`` packages: the API runs as
``python -m uvicorn api.main:app`` and a worker as ``python -m celery -A workers.app worker``,
in a process of their own (``chatpgt serve``/``chatpgt worker`` exec them; the demo starts them
as children).
"""

from __future__ import annotations

import sys
from typing import Literal

QueueName = Literal["datagen", "gpu"]
API_APP = "api.main:app"
CELERY_APP = "workers.app"


def api_command(
    *,
    host: str,
    port: int,
    workers: int | None = None,
    log_level: str = "info",
    python: str = sys.executable,
) -> list[str]:
    """``python -m uvicorn api.main:app`` on ``host:port``."""
    argv = [python, "-m", "uvicorn", API_APP, "--host", host, "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return [*argv, "--log-level", log_level]


def worker_argv(
    queue: QueueName, concurrency: int | None, loglevel: str = "INFO", hostname: str | None = None
) -> list[str]:
    """The ``celery worker`` arguments for a queue. ``gpu`` runs ``--pool solo`` with one
    process (CUDA and fork do not mix); ``datagen`` a prefork pool of ``concurrency`` processes
    (Celery's default, one per CPU, when None). Gossip, mingle and heartbeats are off, as in
    compose.yaml: state lives in Postgres, and workers need not know of each other."""
    argv = ["worker", "-Q", queue, "-n", hostname or f"{queue}@%h", "--loglevel", loglevel]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if queue == "gpu":
        if concurrency not in (None, 1):
            raise ValueError(
                "the gpu queue runs one task at a time (--pool solo); drop --concurrency"
            )
        return [*argv, "--pool", "solo", "-c", "1"]
    argv += ["--pool", "prefork"]
    return [*argv, "-c", str(concurrency)] if concurrency else argv


def worker_command(
    queue: QueueName,
    concurrency: int | None,
    loglevel: str = "INFO",
    hostname: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """``python -m celery -A workers.app worker ...`` for a queue (see :func:`worker_argv`)."""
    celery = [python, "-m", "celery", "-A", CELERY_APP]
    return [*celery, *worker_argv(queue, concurrency, loglevel, hostname)]
