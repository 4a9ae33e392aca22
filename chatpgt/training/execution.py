"""Running one training run in a worker: claim it, hold its lease, train, record the outcome.

Safe under redelivery: a run that is terminal is left alone; one held by a live worker is left to
it; one whose worker died (lease expired) is taken over and resumes from its last checkpoint. A run
that keeps killing its worker (out of memory, say) fails after ``MAX_ATTEMPTS`` instead of looping.
Every error raised while training becomes a failed run with its reason; nothing is re-raised to
Celery, so a bad request is never retried forever.

This module does not import torch; :mod:`chatpgt.training.recipes` is imported when a run starts.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine

from chatpgt.db.session import configure_sqlite, sqlite_connect_args
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.heartbeat import ThreadHeartbeat
from chatpgt.orchestration.leases import worker_identity
from chatpgt.orchestration.status import RunStatus
from chatpgt.settings import Settings, get_settings
from chatpgt.training import chat_format
from chatpgt.training.checkpoints import prune_finished_run
from chatpgt.training.errors import RankFailed, TrainingDataError
from chatpgt.training.repository import RunSnapshot, RunStore

log = logging.getLogger(__name__)

StoreT = TypeVar("StoreT")
MAX_ATTEMPTS = 3
GAVE_UP = "the worker stopped during each one (killed, or out of memory?)"
ORPHAN_QUEUED_AFTER_S = 600.0
_MIN_WRITE_INTERVAL_S = 0.5
_MAX_ERROR_CHARS = 4000


def sync_database_url(url: str) -> str:
    """The psycopg (sync) form of the async database URL in the settings."""
    for async_driver, sync_driver in (
        ("postgresql+asyncpg://", "postgresql+psycopg://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("sqlite+aiosqlite://", "sqlite://"),
    ):
        if url.startswith(async_driver):
            return sync_driver + url[len(async_driver) :]
    return url


def make_sync_engine(settings: Settings) -> Engine:
    """The worker's sync engine: psycopg on Postgres; on SQLite the same connection settings as
    the async engine (WAL, foreign keys, busy timeout), see :func:`chatpgt.db.session.make_engine`.
    """
    url = sync_database_url(settings.database_url)
    engine = create_engine(
        url,
        pool_size=3,
        max_overflow=2,
        pool_pre_ping=True,
        connect_args=sqlite_connect_args(url),
    )
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)
    return engine


@contextmanager
def sync_store(store_of: Callable[[Engine], StoreT], settings: Settings) -> Iterator[StoreT]:
    """A kind's sync store on an engine of its own, disposed after (one task, one engine)."""
    engine = make_sync_engine(settings)
    try:
        yield store_of(engine)
    finally:
        engine.dispose()


class RunReporter:
    """The training side's handle on its run row, used from the training thread.

    Writes are throttled (progress at most every 0.5 s unless forced); each write also reads the
    cancel flag. ``cancelled`` is set when a cancel was requested; ``lost`` when the lease is no
    longer ours (then nothing more may be written).
    """

    def __init__(self, store: RunStore, run_id: int, owner: str) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._last_write = 0.0
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def report(self, *, force: bool = False, **columns: dict[str, Any]) -> None:
        """Merge ``progress=``, ``metrics=``, ``data_report=`` or ``artifacts=`` into the row."""
        with self._lock:
            for key, value in columns.items():
                self._pending.setdefault(key, {}).update(value)
            now = time.monotonic()
            if not force and now - self._last_write < _MIN_WRITE_INTERVAL_S:
                return
            pending, self._pending = self._pending, {}
            self._last_write = now
        if self.lost.is_set() or not pending:
            return
        self.observe(self.store.update(self.run_id, self.owner, **pending))

    def observe(self, flag: bool | None) -> None:
        """Record what a write or heartbeat learnt: the cancel flag, or None for a lost lease."""
        if flag is None:
            self.lost.set()
        elif flag:
            self.cancelled.set()

    @property
    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set()


def lease_heartbeat(reporter: RunReporter, *, lease_s: float, interval_s: float) -> ThreadHeartbeat:
    """Renews the run's lease from a background thread while training blocks the main one
    (chatpgt.orchestration.heartbeat.ThreadHeartbeat); stops once the lease is lost."""

    def beat() -> bool:
        reporter.observe(reporter.store.heartbeat(reporter.run_id, reporter.owner, lease_s))
        if reporter.lost.is_set():
            log.warning("training run %s: lease lost, stopping", reporter.run_id)
            return True
        return False

    return ThreadHeartbeat(beat, interval_s=interval_s, name=f"lease-run-{reporter.run_id}")


def run_dir_for(settings: Settings, snapshot: RunSnapshot) -> Path:
    """The run's directory: kept across attempts (it holds the checkpoints to resume from)."""
    existing = snapshot.artifacts.get("run_dir")
    if existing:
        return Path(existing)
    token = uuid.uuid4().hex[:8]
    return settings.artifacts_dir.resolve() / "training" / f"{snapshot.kind}-{snapshot.id}-{token}"


def execute_run(run_id: int, settings: Settings | None = None) -> str:
    """Run (or resume) training run ``run_id`` to the end; returns what happened, for logs.

    Outcomes: ``succeeded``, ``failed``, ``cancelled``, ``lost`` (another worker took the run
    over), ``busy`` (a live worker holds it), ``finished`` (already terminal), ``missing``.
    """
    settings = settings or get_settings()
    with sync_store(RunStore, settings) as store:
        return _execute(store, run_id, settings)


def _execute(store: RunStore, run_id: int, settings: Settings) -> str:
    owner = worker_identity()
    claimed = leased.claim_sync(
        store, store.snapshot, run_id, owner, settings.job_lease_s, MAX_ATTEMPTS, GAVE_UP
    )
    if claimed == "missing":
        log.warning("training run %s does not exist", run_id)
    if claimed != "claimed":
        return claimed
    snapshot = store.snapshot(run_id)
    assert snapshot is not None
    reporter = RunReporter(store, run_id, owner)
    if snapshot.cancel_requested:  # cancelled while its worker was dead
        store.finish(run_id, owner, RunStatus.CANCELLED)
        return RunStatus.CANCELLED

    run_dir = run_dir_for(settings, snapshot)
    reporter.report(
        artifacts={
            "run_dir": str(run_dir),
            "model_dir": str(run_dir / "model"),
            "tensorboard_dir": str(run_dir / "runs"),
        },
        force=True,
    )
    log.info(
        "training run %s (%s): attempt %s in %s", run_id, snapshot.kind, snapshot.attempts, run_dir
    )
    with lease_heartbeat(
        reporter, lease_s=settings.job_lease_s, interval_s=settings.job_heartbeat_s
    ):
        try:
            from chatpgt.training import distributed, recipes  # torch, TRL: worker only

            if distributed.is_multiprocess(snapshot, settings):
                outcome = distributed.run(snapshot, run_dir, reporter, settings)
            else:
                outcome = recipes.run(snapshot, run_dir, reporter, settings.database_url)
            if outcome.status == RunStatus.SUCCEEDED:
                # The saved template renders the system prompt the run trained with.
                for folder in (
                    outcome.artifacts["model_dir"],
                    outcome.artifacts.get("adapter_dir"),
                ):
                    if folder:
                        chat_format.apply_trained_format(
                            snapshot.kind, snapshot.request, run_dir, Path(folder)
                        )
        except Exception as exc:
            log.exception("training run %s failed", run_id)
            if reporter.lost.is_set():
                return "lost"
            store.finish(run_id, owner, RunStatus.FAILED, error=describe(exc))
            return RunStatus.FAILED

    if outcome.status == "lost" or reporter.lost.is_set():
        return "lost"
    if outcome.status == RunStatus.SUCCEEDED:
        outcome.artifacts["pruned"] = _prune(run_dir, outcome.final_metrics.get("global_step"))
    reporter.report(
        metrics={"final": outcome.final_metrics}, artifacts=outcome.artifacts, force=True
    )
    if outcome.status == RunStatus.CANCELLED:
        store.finish(run_id, owner, RunStatus.CANCELLED)
        return RunStatus.CANCELLED
    start = snapshot.start_model
    registered = store.finish(
        run_id,
        owner,
        RunStatus.SUCCEEDED,
        samples=outcome.samples,
        register={
            "name": snapshot.output_name,
            "kind": snapshot.kind,
            "path": outcome.artifacts["model_dir"],
            "metrics": outcome.final_metrics,
            "parent_id": start.get("model_id"),
            "base": None
            if start.get("model_id")
            else {"name": start["ref"], "path": start["path"]},
        },
    )
    return RunStatus.SUCCEEDED if registered else "lost"


def _prune(run_dir: Path, final_step: Any) -> dict[str, Any]:
    """Drop a succeeded run's optimizer state and spare checkpoints (its model is saved); a
    failure to delete is logged, never a failed run."""
    try:
        step = int(final_step) if final_step is not None else None
        return prune_finished_run(run_dir, step)
    except OSError as exc:
        log.warning("could not prune the checkpoints of %s: %s", run_dir, exc)
        return {"error": str(exc)}


def describe(exc: BaseException) -> str:
    """The reason stored on a failed run: the exception and the innermost frames."""
    lines = traceback.format_exception_only(type(exc), exc)
    if isinstance(exc, TrainingDataError | RankFailed | OSError | ValueError):
        return "".join(lines).strip()[:_MAX_ERROR_CHARS]
    tb = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "".join(f"  at {f.filename}:{f.lineno} in {f.name}\n" for f in tb)
    return ("".join(lines).strip() + ("\n" + where if where else ""))[:_MAX_ERROR_CHARS]


def recoverable_runs(settings: Settings | None = None) -> list[tuple[int, str, float]]:
    """Runs a starting GPU worker should (re)enqueue: running with an expired lease (their worker
    died, and Redis would redeliver only after its visibility timeout), or queued for over
    ``ORPHAN_QUEUED_AFTER_S`` (their message may be lost). A duplicate message is harmless: the
    run's lease makes the second delivery a no-op. Each comes with its kind, which names the task
    that runs it."""
    with sync_store(RunStore, settings or get_settings()) as store:
        runs = store.orphaned_runs(ORPHAN_QUEUED_AFTER_S)
        kinds = store.kinds([run_id for run_id, _ in runs])
        return [(run_id, kinds[run_id], wait_s) for run_id, wait_s in runs]
