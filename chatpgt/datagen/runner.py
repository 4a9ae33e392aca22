"""Runs one datagen job: the job's state machine, from claim to its terminal state.

The runner holds the job's lease (chatpgt.orchestration) while it works, so a redelivered task
never runs a job twice; if the worker dies, the lease runs out and the next delivery resumes
from the rows: succeeded rows are kept, unfinished ones are done again. The work itself is done
by the planner (rows), the executor (requests, judging, pairs) and the flusher (writes); every
status change of the job is made here, through ``repository.transition``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository as repo
from chatpgt.datagen import summaries
from chatpgt.datagen.batches import JobBatches
from chatpgt.datagen.cache import ResponseCache
from chatpgt.datagen.executor import Executor, StopFlag, max_unwritten
from chatpgt.datagen.flusher import Flusher
from chatpgt.datagen.models import DatagenJob
from chatpgt.datagen.planner import JobPlan, JudgmentPlanner, load_work, plan_job
from chatpgt.db.session import make_engine, make_sessionmaker, run_once, transaction
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.heartbeat import heartbeat
from chatpgt.orchestration.leases import LeaseLost, worker_identity
from chatpgt.orchestration.retry import until_reachable
from chatpgt.orchestration.status import TERMINAL, RunStatus
from chatpgt.providers.client import ProviderPool
from chatpgt.providers.types import LocalOptions
from chatpgt.settings import Settings

log = logging.getLogger(__name__)

_T = TypeVar("_T")

__all__ = ["WAITING", "JobRunner", "LeaseLost", "orphaned_jobs", "recoverable_jobs", "run_job"]

# Allocations between young collections while a job runs (Python's default is 700): at 1,000
# requests in flight each young pass also found little to free, and every tenth of them
# promoted the requests in flight towards the full passes.
_GC_GEN0_THRESHOLD = 20_000

_gc_runs = 0  # runs of this process inside _frozen
_gc_thresholds: tuple[int, ...] = gc.get_threshold()

# What a run ends with when its job waits on provider batches (the task looks again later).
WAITING = "waiting"

ORPHAN_REASON = "not needed: the essays it depends on did not all succeed"


class JobRunner:
    def __init__(
        self,
        job_id: int,
        sessionmaker: async_sessionmaker[AsyncSession],
        pool: ProviderPool,
        settings: Settings,
        owner: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.sm = sessionmaker
        self.pool = pool
        self.settings = settings
        self.owner = owner or worker_identity()
        self.stop = StopFlag(lambda reason: self._cancel_work())
        self._lease_lost = False
        self._main: asyncio.Task[None] | None = None

    async def run(self) -> str:
        """Run the job to a terminal state. Returns the final status, or "busy" when another
        live worker holds the job, or the status it already had when it was finished."""
        claimed = await self._db("claim", self._claim)
        if claimed != "claimed":
            return claimed
        with _frozen():
            return await self._run()

    async def _run(self) -> str:
        try:
            local = {name for name, cfg in self.pool.configs.items() if cfg.kind == "local"}
            plan = await self._db("plan", lambda: plan_job(self.sm, self.job_id, local))
            topics, spent = await self._db("load", lambda: load_work(self.sm, self.job_id))
            batches = JobBatches(self.job_id, self.sm, self.pool)
            if _uses_batches(plan):
                # What the provider finished since the last run; what is still out holds budget.
                await self._db("batches", batches.refresh)
            plan.budget.spent = spent + batches.reserved
            if await self._db("cancel flag", self._cancel_requested):
                # Asked while the job was parked on its batches (no heartbeat saw it): cancel
                # them first, so that what they finished is stored and kept by this last run.
                self.stop.request("cancelled")
                if batches.outstanding:
                    await self._db("cancel batches", batches.cancel_all)
                    await self._db("batches", batches.refresh)
            flusher = Flusher(
                self.job_id,
                self.sm,
                self._fence,
                interval_s=self.settings.db_flush_interval_s,
                max_errors_kept=self.settings.max_job_errors_kept,
                max_items=self.settings.db_flush_max_items,
                max_unwritten=max_unwritten(plan.req, self.pool, self.settings.db_flush_max_items),
            )
            planner = JudgmentPlanner(
                self.job_id, self.sm, self._fence, interval_s=self.settings.db_flush_interval_s
            )
            cache = ResponseCache(
                self.sm, self.pool.configs, enabled=plan.req.cache, label=f"job {self.job_id}"
            )
            executor = Executor(
                self.job_id,
                plan,
                self.pool,
                self.settings,
                flusher,
                planner,
                self.stop,
                cache,
                batches,
            )
            background = [
                asyncio.create_task(
                    heartbeat(
                        self._renew,
                        self._on_beat,
                        interval_s=self.settings.job_heartbeat_s,
                        label=f"job {self.job_id}",
                    )
                ),
                asyncio.create_task(flusher.loop(self._stop_lease_lost)),
                asyncio.create_task(planner.loop(self._stop_lease_lost)),
            ]
            self._main = asyncio.create_task(executor.execute(topics))
            gc.freeze()  # the job's plan and rows too (see _frozen)
            try:
                await self._main
            except asyncio.CancelledError:
                if self.stop.reason is None and not self._lease_lost:
                    raise
            finally:
                for task in background:
                    task.cancel()
                # Let a unit of work in flight end (see to_the_end) before the last flush.
                await asyncio.wait(background)
            if self._lease_lost:
                raise LeaseLost(f"datagen job {self.job_id}: lease lost")
            await self._db("last flush", flusher.flush)
            if self.stop.reason is not None:
                await self._db("cancel batches", batches.cancel_all)
            elif batches.waiting:
                return await self._park(batches)
            status = await self._db("finish", lambda: self._finish(plan, flusher.first_error))
            await summaries.store_work_summary(self.sm, self.job_id)
            return status
        except LeaseLost:
            log.warning("job %s: lease taken over by another worker; stopping", self.job_id)
            return "lease_lost"
        except BaseException:
            # Give the job back at once so a retry (or another worker) can resume it.
            await leased.give_back(
                self.sm, DatagenJob, self.job_id, self.owner, f"job {self.job_id}"
            )
            raise

    async def _db(self, what: str, work: Callable[[], Awaitable[_T]]) -> _T:
        """Run a unit of database work until it goes through, waiting out an outage
        (chatpgt.orchestration.retry); ``work`` must be safe to replay."""
        return await until_reachable(
            work,
            label=f"job {self.job_id}",
            what=what,
            first_delay_s=self.settings.db_flush_interval_s,
        )

    async def _cancel_requested(self) -> bool:
        async with self.sm() as s:
            return (await repo.get_job(s, self.job_id)).cancel_requested

    async def _claim(self) -> str:
        async with transaction(self.sm) as s:
            return await repo.claim(s, self.job_id, self.owner, self.settings.job_lease_s)

    # --- the lease -------------------------------------------------------------------------

    async def _renew(self) -> tuple[bool, bool]:
        async with transaction(self.sm) as s:
            return await repo.renew_lease(s, self.job_id, self.owner, self.settings.job_lease_s)

    def _on_beat(self, renewed: tuple[bool, bool]) -> bool:
        """A renewal went through: stop the work when the lease is lost or a cancel was asked
        for. Returns whether the heartbeat should stop."""
        ours, cancel = renewed
        if not ours:
            self._stop_lease_lost()
        elif cancel:
            self.stop.request("cancelled")
        return not ours or cancel

    async def _fence(self, s: AsyncSession) -> None:
        """Renew the lease inside a write's own transaction: a runner that lost the job writes
        nothing more (the row lock keeps a claimant out until the write is committed)."""
        ours, _ = await repo.renew_lease(s, self.job_id, self.owner, self.settings.job_lease_s)
        if not ours:
            raise LeaseLost(f"datagen job {self.job_id}: lease lost")

    def _stop_lease_lost(self) -> None:
        self._lease_lost = True
        self._cancel_work()

    def _cancel_work(self) -> None:
        """Stop the work in flight; what is done is in the flusher already."""
        if self._main:
            self._main.cancel()

    # --- the end ---------------------------------------------------------------------------

    async def _park(self, batches: JobBatches) -> str:
        """Send what waits for a batch, then give the worker back: the job stays running, its
        lease free of takers for ``batch_poll_s``, and a later run picks up the answers."""
        made = await batches.submit()
        poll = self.settings.batch_poll_s
        async with transaction(self.sm) as s:
            parked = await repo.park_job(s, self.job_id, self.owner, poll)
        if not parked:
            return "lease_lost"
        log.info(
            "job %s: %d new batch(es), %d request(s) out; looking again in %gs",
            self.job_id,
            made,
            len(batches.outstanding),
            poll,
        )
        return WAITING

    async def _finish(self, plan: JobPlan, first_error: str | None) -> str:
        """The job's terminal transition, with its outcome and failure summary."""
        reason = self.stop.reason
        async with transaction(self.sm) as s:
            if reason == "cancelled":
                await repo.cancel_pending_items(s, self.job_id)
            elif reason == "max_failure_rate":
                await repo.cancel_pending_items(
                    s, self.job_id, "not requested: the job stopped at its max_failure_rate"
                )
            else:
                await repo.close_orphans(s, self.job_id, ORPHAN_REASON)
            counts = (await repo.job_counts(s, [self.job_id]))[self.job_id]
            failures = await repo.failure_summary(s, self.job_id)
            # A resumed run may not have seen the first failure itself: then the commonest.
            first_error = first_error or (failures[0]["reason"] if failures else None)
            exhausted = plan.budget.exhausted
            error = summaries.failure_error(
                counts,
                first_error,
                budget_exhausted=exhausted,
                stopped_by_failure_rate=reason == "max_failure_rate",
                max_failure_rate=plan.req.max_failure_rate,
            )
            stop_reason: str | None
            if reason == "cancelled":
                target, stop_reason, error = RunStatus.CANCELLED, "cancelled", None
            elif error is not None:
                target, stop_reason = RunStatus.FAILED, reason
            else:
                target = RunStatus.SUCCEEDED
                stop_reason = "budget_exhausted" if exhausted else None
                if exhausted:
                    error = summaries.budget_note(counts, plan.budget.limit, plan.budget.spent)
            ok = await repo.transition(
                s,
                self.job_id,
                target,
                owner=self.owner,
                stop_reason=stop_reason,
                error=error,
                outcome=summaries.outcome_of(counts).value,
                failure_summary=failures,
            )
            return target.value if ok else await self._refused(s)

    async def _refused(self, s: AsyncSession) -> str:
        """What the run ends with when its final transition was refused: the job's status when
        it is already terminal (e.g. an earlier try of this transition committed but its answer
        was lost with the connection), "lease_lost" otherwise."""
        status = (await repo.get_job(s, self.job_id)).status
        return status if status in TERMINAL else "lease_lost"


def _uses_batches(plan: JobPlan) -> bool:
    req = plan.req
    return req.judge.mode == "batch" or any(g.mode == "batch" for g in req.generators)


@contextlib.contextmanager
def _frozen() -> Iterator[None]:
    """What the process holds when a job starts (its imported modules; then the job's plan and
    rows, frozen again once loaded) lives through the run: keep it out of the cyclic
    collector's full passes, which walked all of it every few seconds (0.2-0.5 s each at 1,000
    requests in flight, stalling the event loop). Unfrozen, and the process's thresholds
    restored, when the last of the runs in this process ends."""
    global _gc_runs, _gc_thresholds
    if not _gc_runs:
        _gc_thresholds = gc.get_threshold()
        t0, *older = _gc_thresholds
        gc.set_threshold(max(t0, _GC_GEN0_THRESHOLD), *older)
    _gc_runs += 1
    gc.freeze()
    try:
        yield
    finally:
        _gc_runs -= 1
        if not _gc_runs:
            gc.set_threshold(*_gc_thresholds)
            gc.unfreeze()


async def run_job(job_id: int, settings: Settings) -> str:
    """Entry point for a worker: its own engine and provider pool for this run."""
    engine = make_engine(settings.database_url, pool_size=4)
    redis = Redis.from_url(settings.rate_limit_redis_url) if settings.rate_limit_redis_url else None
    try:
        pool = ProviderPool(
            settings.provider_configs(),
            redis=redis,
            limiter_key_prefix=settings.rate_limit_key_prefix,
            local_options=LocalOptions.from_settings(settings),
        )
        async with pool:
            return await JobRunner(job_id, make_sessionmaker(engine), pool, settings).run()
    finally:
        await engine.dispose()
        if redis is not None:
            await redis.aclose()


async def recoverable_jobs(
    settings: Settings, queued_for_s: float = 30.0
) -> list[tuple[int, float]]:
    """Active jobs with the seconds to wait before re-enqueuing each (see workers)."""
    return await run_once(settings.database_url, lambda s: repo.recoverable_jobs(s, queued_for_s))


async def orphaned_jobs(settings: Settings) -> list[int]:
    """Running jobs whose lease ran out (see the workers' periodic sweep)."""
    return await run_once(settings.database_url, repo.orphaned_jobs)
