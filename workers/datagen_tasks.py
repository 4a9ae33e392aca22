"""Datagen tasks (queue ``datagen``): thin wrappers around chatpgt.datagen.runner.

``run_job`` runs a job; ``sweep_orphans`` is sent by Celery beat every
``CHATPGT_JOB_SWEEP_INTERVAL_S`` (see workers/app.py) and re-enqueues running jobs whose lease
ran out, so a job whose worker died is taken over by a live worker without waiting for a worker
to start. A starting datagen worker re-enqueues the active jobs once as well.

``rounds_step`` advances an on-policy rounds run by one step and sends itself again; the sweep
and a starting worker restart a rounds run whose chain of steps was lost.

``dedup_scan`` runs a near-duplicate scan (chatpgt.datasets.scan_runner): CPU work near the
database, so here and not in the API; the sweep and a starting worker re-enqueue a scan whose
lease ran out, like a job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from celery import Task
from celery.signals import worker_ready

from chatpgt.datagen import runner
from chatpgt.datasets import scan_runner
from chatpgt.db.session import is_unavailable
from chatpgt.orchestration.tasks import DATAGEN_RUN_JOB, DATAGEN_SWEEP, DEDUP_SCAN, ROUNDS_STEP
from chatpgt.rounds import service as rounds
from chatpgt.settings import get_settings
from workers.app import DATAGEN_QUEUE, celery_app

log = logging.getLogger(__name__)

# The longest wait between two tries to recover jobs while the database is unreachable at start.
RECOVERY_RETRY_MAX_S = 30.0


@celery_app.task(name=DATAGEN_RUN_JOB, bind=True, max_retries=20)
def run_job(self: Task, job_id: int) -> str:
    """Run a datagen job to the end. When another live worker holds the job, check back after a
    lease period so a job whose worker dies is always picked up again."""
    settings = get_settings()
    try:
        outcome = asyncio.run(runner.run_job(job_id, settings))
    except Exception as exc:  # e.g. the database went away: retry with backoff, never lose the job
        log.exception("datagen job %s failed; retrying", job_id)
        raise self.retry(exc=exc, countdown=min(60, 2 ** min(self.request.retries, 6))) from exc
    if outcome == "busy":
        raise self.retry(countdown=settings.job_lease_s * 2, max_retries=None)
    if outcome == runner.WAITING:  # parked on provider batches: look again, holding nothing
        raise self.retry(countdown=settings.batch_poll_s + 0.2, max_retries=None)
    return outcome


@celery_app.task(name=DEDUP_SCAN, bind=True, max_retries=20, ignore_result=True)
def dedup_scan(self: Task, scan_id: int) -> str:
    """Run a near-duplicate scan to its end. A scan another live worker holds is looked at
    again after a lease period; an unreachable database is retried with backoff."""
    settings = get_settings()
    try:
        outcome = asyncio.run(scan_runner.run_scan(scan_id, settings))
    except Exception as exc:
        log.exception("dedup scan %s: stopped (%s); retrying", scan_id, exc)
        raise self.retry(exc=exc, countdown=min(60, 2 ** min(self.request.retries, 6))) from exc
    if outcome == "busy":
        raise self.retry(countdown=settings.job_lease_s * 2, max_retries=None)
    return outcome


def _send(task: str, arg: int) -> None:
    celery_app.send_task(task, args=[arg])


@celery_app.task(name=ROUNDS_STEP, bind=True, max_retries=None, ignore_result=True)
def rounds_step(self: Task, run_id: int, token: str | None = None) -> str:
    """One step of a rounds run (chatpgt.rounds.service.step), then itself again after the delay
    the step asked for. Cheap: it submits and looks, never waits on a job or a training run."""
    try:
        following = asyncio.run(rounds.step(run_id, token, get_settings(), _send))
    except Exception as exc:  # the database went away: nothing was committed, try again
        log.warning("rounds run %s: step failed (%s); retrying", run_id, exc)
        raise self.retry(exc=exc, countdown=min(60, 2 ** min(self.request.retries, 6))) from exc
    if following is None:
        return "done"
    delay, next_token = following
    rounds_step.apply_async(args=[run_id, next_token], countdown=delay or None)
    return "stepped"


def _restart_stalled_rounds() -> int:
    stalled = asyncio.run(rounds.stalled_runs(get_settings()))
    for run_id in stalled:
        log.warning("rounds run %s: not stepped for a while; stepping it again", run_id)
        rounds_step.apply_async(args=[run_id])
    return len(stalled)


@celery_app.task(name=DATAGEN_SWEEP, ignore_result=True)
def sweep_orphans() -> int:
    """Re-enqueue running jobs and dedup scans whose lease ran out. Only expired leases: a job
    with a live owner is never touched, and a queued backlog is left to the queue. A duplicate
    delivery finds the job claimed and steps back. While the database is unreachable a sweep
    does nothing (the next one looks again)."""
    try:
        orphans = asyncio.run(runner.orphaned_jobs(get_settings()))
        _restart_stalled_rounds()
        scans = asyncio.run(scan_runner.orphaned_scans(get_settings()))
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        log.warning("datagen sweep: database unreachable; the next sweep looks again")
        return 0
    for job_id in orphans:
        log.warning("datagen job %s: its worker's lease ran out; re-enqueuing it", job_id)
        run_job.apply_async(args=[job_id])
    for scan_id in scans:
        log.warning("dedup scan %s: its worker's lease ran out; re-enqueuing it", scan_id)
        dedup_scan.apply_async(args=[scan_id])
    return len(orphans) + len(scans)


@worker_ready.connect
def _recover_jobs(sender: Any = None, **_: Any) -> None:
    """On start-up, re-enqueue active jobs, e.g. those of a worker that was killed. Duplicate
    deliveries are harmless: the job's lease lets one worker run it at a time."""
    queues = {q.name for q in sender.app.amqp.queues.consume_from.values()} if sender else set()
    if DATAGEN_QUEUE not in queues:
        return
    try:
        _recover_once()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # The database is restarting (or not up yet): keep trying in the background, so the
        # worker consumes meanwhile and the jobs are recovered once it is back.
        log.warning("database unreachable at start-up (%s); will recover datagen jobs later", exc)
        threading.Thread(target=_recover_when_back, name="datagen-recovery", daemon=True).start()


def _recover_once() -> None:
    _restart_stalled_rounds()
    for job_id, wait_s in asyncio.run(runner.recoverable_jobs(get_settings())):
        log.info("re-enqueuing datagen job %s in %.0fs", job_id, wait_s)
        run_job.apply_async(args=[job_id], countdown=wait_s + 0.5 if wait_s else None)
    for scan_id, wait_s in asyncio.run(scan_runner.recoverable_scans(get_settings())):
        log.info("re-enqueuing dedup scan %s in %.0fs", scan_id, wait_s)
        dedup_scan.apply_async(args=[scan_id], countdown=wait_s + 0.5 if wait_s else None)


def _recover_when_back() -> None:
    delay = 1.0
    while True:
        time.sleep(delay)
        try:
            _recover_once()
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("could not recover datagen jobs")
                return
            delay = min(delay * 2, RECOVERY_RETRY_MAX_S)
            continue
        log.info("database back: datagen jobs recovered")
        return
