"""Running one near-duplicate scan in a datagen worker: claim it, hold its lease, scan, finish.

The scan's life is a datagen job's (``orchestration.status.DEDUP_SCAN``, the lease statements
of ``orchestration.leases``, the asyncio heartbeat): a worker takes the lease, moves the scan to
running and renews the lease every ``CHATPGT_JOB_HEARTBEAT_S`` while :func:`dedup.scan` reads
the essays in one transaction (its hashing on a thread, so the heartbeat keeps beating). The
progress (essays scanned so far, of the total counted at start) is written now and then from
another connection, fenced by the lease. The flags are replaced and the scan is moved to
succeeded in the scan's own transaction, guarded by the lease: a worker that lost its scan
commits nothing. A worker that dies leaves a lease that runs out; the orphan sweep or a
starting datagen worker re-enqueues the scan and another worker scans again from the start (a
scan replaces the jobs' flags, so running it twice writes what running it once does). A scan
that kept killing its worker (out of memory, say) fails after ``MAX_ATTEMPTS``.

An error fails the scan with its reason; an unreachable database is raised instead, so the task
retries (the lease is given back first, when the database lets us).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datasets import dedup
from chatpgt.datasets import repository as repo
from chatpgt.datasets.models import DedupScan
from chatpgt.db.session import (
    is_unavailable,
    make_engine,
    make_sessionmaker,
    run_once,
    transaction,
)
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.heartbeat import heartbeat
from chatpgt.orchestration.leases import LeaseLost, worker_identity
from chatpgt.orchestration.status import DEDUP_SCAN, TERMINAL, RunStatus
from chatpgt.settings import Settings

log = logging.getLogger(__name__)

# Workers that may take a scan (each a claim); the next claim fails it.
MAX_ATTEMPTS = 3
# Queued scans older than this are re-enqueued by a starting worker (their message may be lost).
ORPHAN_QUEUED_AFTER_S = 30.0
# The progress written at most this often (and after the corpus is indexed, and at the end).
PROGRESS_EVERY_S = 1.0
_MAX_ERROR_CHARS = 2000


def describe(exc: BaseException) -> str:
    """The reason stored on a failed scan: the exception and its innermost frames."""
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "".join(f"  at {f.filename}:{f.lineno} in {f.name}\n" for f in frames)
    return (head + ("\n" + where if where else ""))[:_MAX_ERROR_CHARS]


@dataclass
class _Stop:
    reason: str | None = None  # "cancelled" | "lease_lost"


class ScanRunner:
    def __init__(
        self,
        scan_id: int,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        owner: str | None = None,
    ) -> None:
        self.scan_id = scan_id
        self.sm = sessionmaker
        self.settings = settings
        self.owner = owner or worker_identity()
        self.stop = _Stop()
        self._main: asyncio.Task[dedup.ScanResult] | None = None
        self.job_ids: list[int] = []  # as stored; read by the claim
        self.threshold = dedup.DEFAULT_THRESHOLD
        self._progress_at = float("-inf")
        self._total: int | None = None

    async def run(self) -> str:
        """Run the scan to a terminal state. Returns its final status, "busy" when another live
        worker holds it, "missing", "lease_lost", or the status it already had."""
        claimed = await self._claim()
        if claimed != "claimed":
            return claimed
        try:
            return await self._run()
        except BaseException:
            label = f"dedup scan {self.scan_id}"
            await leased.give_back(self.sm, DedupScan, self.scan_id, self.owner, label)
            raise

    # --- claim -----------------------------------------------------------------------------

    async def _claim(self) -> str:
        async with transaction(self.sm) as s:
            taken = await leased.take(
                s, DedupScan, self.scan_id, self.owner, self.settings.job_lease_s
            )
            scan: DedupScan | None = taken.row
            if taken.was is None or scan is None:
                return taken.refused
            if scan.attempts > MAX_ATTEMPTS:
                await self._end(
                    s,
                    RunStatus.FAILED,
                    error=f"gave up after {scan.attempts - 1} attempts: the worker stopped "
                    "during each one",
                )
                return RunStatus.FAILED
            if scan.cancel_requested:
                await self._end(s, RunStatus.CANCELLED)
                return RunStatus.CANCELLED
            if taken.was == RunStatus.QUEUED:
                await leased.start(s, DedupScan, DEDUP_SCAN, self.scan_id, self.owner)
            else:
                log.warning(
                    "dedup scan %s: taking it over (attempt %s)", self.scan_id, scan.attempts
                )
            self.job_ids = list(scan.job_ids)
            self.threshold = float(scan.threshold)
            return "claimed"

    async def _end(self, s: AsyncSession, target: RunStatus, **values: Any) -> bool:
        return await repo.transition_scan(s, self.scan_id, target, owner=self.owner, **values)

    # --- the work --------------------------------------------------------------------------

    async def _run(self) -> str:
        self._main = asyncio.create_task(self._scan())
        beat = asyncio.create_task(
            heartbeat(
                self._renew,
                self._on_beat,
                interval_s=self.settings.job_heartbeat_s,
                label=f"dedup scan {self.scan_id}",
            )
        )
        try:
            result = await self._main
        except asyncio.CancelledError:
            if self.stop.reason is None:
                raise
            return await self._stopped()
        except LeaseLost:
            log.warning("dedup scan %s: the lease was taken over; stopping", self.scan_id)
            return "lease_lost"
        except Exception as exc:
            if is_unavailable(exc):
                raise  # the task retries once the database is back
            log.exception("dedup scan %s failed", self.scan_id)
            if self.stop.reason == "lease_lost":
                return "lease_lost"
            async with transaction(self.sm) as s:
                ok = await self._end(s, RunStatus.FAILED, error=describe(exc))
                return RunStatus.FAILED if ok else await self._refused(s)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        log.info(
            "dedup scan %s succeeded: %d essays, %d corpus essays, flagged %s",
            self.scan_id,
            result.essays,
            result.corpus_essays,
            result.flagged,
        )
        return RunStatus.SUCCEEDED

    async def _scan(self) -> dedup.ScanResult:
        """The scan in one transaction: read, hash, replace the flags, and the final transition
        guarded by our lease (else nothing of it commits)."""
        async with transaction(self.sm) as s:
            jobs = self.job_ids or await repo.all_job_ids(s)
            self._total = await repo.count_essays(s, jobs)
            result = await dedup.scan(s, jobs, self.threshold, on_progress=self._progress)
            ok = await self._end(
                s,
                RunStatus.SUCCEEDED,
                progress=self._progress_of(result),
                result={
                    "job_ids": result.job_ids,
                    "threshold": result.threshold,
                    "essays": result.essays,
                    "corpus_essays": result.corpus_essays,
                    "flagged": result.flagged,
                },
                error=None,
            )
            if not ok:
                raise LeaseLost(f"dedup scan {self.scan_id}: lease lost")
            return result

    def _progress_of(self, result: dedup.ScanResult) -> dict[str, Any]:
        return {
            "essays": result.essays,
            "total": self._total,
            "corpus_essays": result.corpus_essays,
        }

    async def _progress(self, result: dedup.ScanResult) -> None:
        """Write the counts so far (at most every ``PROGRESS_EVERY_S``, and always after the
        corpus), in a transaction of their own; a lost lease stops the scan."""
        at = time.monotonic()
        if result.essays and at - self._progress_at < PROGRESS_EVERY_S:
            return
        self._progress_at = at
        async with transaction(self.sm) as s:
            ours = await repo.write_scan_progress(
                s, self.scan_id, self.owner, self._progress_of(result)
            )
        if not ours:
            self.stop.reason = "lease_lost"
            raise LeaseLost(f"dedup scan {self.scan_id}: lease lost")

    # --- the lease -------------------------------------------------------------------------

    async def _renew(self) -> tuple[bool, bool]:
        async with transaction(self.sm) as s:
            return await repo.renew_scan_lease(
                s, self.scan_id, self.owner, self.settings.job_lease_s
            )

    def _on_beat(self, renewed: tuple[bool, bool]) -> bool:
        ours, cancel = renewed
        if not ours:
            self.stop.reason = "lease_lost"
        elif cancel:
            self.stop.reason = "cancelled"
        else:
            return False
        if self._main is not None:
            self._main.cancel()
        return True

    async def _stopped(self) -> str:
        """The scan's transaction was rolled back (the jobs keep their earlier flags)."""
        if self.stop.reason == "lease_lost":
            log.warning("dedup scan %s: lease lost; stopping", self.scan_id)
            return "lease_lost"
        async with transaction(self.sm) as s:
            ok = await self._end(s, RunStatus.CANCELLED)
            return RunStatus.CANCELLED if ok else await self._refused(s)

    async def _refused(self, s: AsyncSession) -> str:
        """A final transition that matched nothing: the status when the scan is terminal
        already, else another worker holds it."""
        scan = await repo.get_scan(s, self.scan_id)
        return scan.status if scan is not None and scan.status in TERMINAL else "lease_lost"


# --- entry points of the tasks -------------------------------------------------------------


async def run_scan(scan_id: int, settings: Settings) -> str:
    """Run a scan in this (worker) process, on an engine of its own."""
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        return await ScanRunner(scan_id, make_sessionmaker(engine), settings).run()
    finally:
        await engine.dispose()


async def recoverable_scans(
    settings: Settings, queued_for_s: float = ORPHAN_QUEUED_AFTER_S
) -> list[tuple[int, float]]:
    """Running scans and scans queued for long, with the seconds until each lease runs out."""
    return await run_once(settings.database_url, lambda s: repo.recoverable_scans(s, queued_for_s))


async def orphaned_scans(settings: Settings) -> list[int]:
    """Running scans whose lease ran out (the sweep's)."""
    return await run_once(settings.database_url, repo.orphaned_scans)
