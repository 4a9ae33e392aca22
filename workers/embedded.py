"""An in-process worker for embedded mode: the same Celery tasks, run by a worker thread.

With ``CHATPGT_BROKER_URL=memory://`` the queue lives in the API process itself (kombu's
in-memory transport), so the API starts this worker in a thread. Tasks, retries, acks and the
start-up recovery of unfinished jobs are Celery's own, exactly as in a separate worker process;
only the transport differs. Training runs in that thread too, so in embedded mode the API
process imports torch when (and only when) a training run or a local model starts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import Celery, signals

from workers.app import DATAGEN_QUEUE, GPU_QUEUE

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """A Celery ``WorkController`` on a daemon thread, consuming every queue.

    ``concurrency`` threads run tasks: one datagen job and one training run at the same time
    with the default of 2.
    """

    def __init__(self, app: Celery, *, concurrency: int = 2) -> None:
        self.app = app
        self.concurrency = concurrency
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: Any = None

    def start(self, timeout_s: float = 60.0) -> None:
        app = self.app
        app.finalize()
        app.set_current()
        app.set_default()
        self._worker = app.WorkController(
            concurrency=self.concurrency,
            pool="threads",
            hostname=f"embedded-{os.getpid()}@{socket.gethostname()}",
            queues=[DATAGEN_QUEUE, GPU_QUEUE],
            ready_callback=self._on_ready,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self._thread = threading.Thread(
            target=self._worker.start, name="chatpgt-embedded-worker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"the embedded worker did not start within {timeout_s:.0f} s")
        log.info(
            "embedded worker running (queues %s, %s, threads %d)",
            DATAGEN_QUEUE,
            GPU_QUEUE,
            self.concurrency,
        )

    def _on_ready(self, consumer: Any) -> None:
        # A separate worker process sends worker_ready from its command-line front end; send it
        # here too, so that unfinished jobs and runs are re-enqueued the same way.
        signals.worker_ready.send(sender=consumer)
        self._ready.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking tasks and wait for the worker thread (running tasks finish or time out;
        unfinished ones are resumed from their rows at the next start)."""
        if self._thread is None:
            return
        from celery.worker import state

        state.should_terminate = 0
        self._thread.join(timeout_s)
        state.should_terminate = None
        if self._thread.is_alive():
            log.warning("the embedded worker did not stop within %.0f s", timeout_s)
        self._thread = None
