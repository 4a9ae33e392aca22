"""The flusher: results, pairs, finished topics and the first errors of a job, buffered in
memory and written in one transaction every ``db_flush_interval_s``, or as soon as
``max_items`` answers (essays and verdicts) wait (``db_flush_max_items``).

Results, pairs and finished topics are written together and in order, so a crash never leaves a
pair whose essays or verdicts are not on disk: it loses the whole batch, which the next run
redoes. Each batch is fenced by the job's lease (see :meth:`Flusher.flush`).

The flusher also bounds what a crash can cost: an item (an essay or a verdict) takes a place
(:meth:`Flusher.reserve`) before its request is made and gives it back only once its result is
committed, so a job never has more than ``max_unwritten`` items asked for and not yet on disk.
When the writes lag behind the answers (a busy CPU, a slow database), the requests wait for
them instead of piling up paid answers that a crash would lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository as repo
from chatpgt.db.session import transaction
from chatpgt.orchestration.leases import LeaseLost
from chatpgt.orchestration.retry import until_reachable

log = logging.getLogger(__name__)

# Renews the job's lease inside a transaction; raises LeaseLost when another worker holds it.
Fence = Callable[[AsyncSession], Awaitable[None]]


class Flusher:
    def __init__(
        self,
        job_id: int,
        sessionmaker: async_sessionmaker[AsyncSession],
        fence: Fence,
        *,
        interval_s: float,
        max_errors_kept: int,
        max_items: int = 32,
        max_unwritten: int = 1_000_000,
    ) -> None:
        self.job_id = job_id
        self.sm = sessionmaker
        self.fence = fence
        self.interval_s = interval_s
        self.max_items = max_items
        self.max_errors_kept = max_errors_kept
        self.generations: list[dict[str, Any]] = []
        self.judgments: list[dict[str, Any]] = []
        self.pairs: list[dict[str, Any]] = []
        # near-duplicate flags of a job's dedup option (chatpgt.datagen.dedup_step)
        self.near_duplicates: list[dict[str, Any]] = []
        self.done_topics: list[int] = []
        # new answers for the response cache (chatpgt.datagen.cache)
        self.cached_responses: list[dict[str, Any]] = []
        self.first_error: str | None = None
        self._errors: list[dict[str, Any]] = []
        self._errors_seen = 0
        self._errors_replayed = False
        self._lock = asyncio.Lock()
        self._due = asyncio.Event()  # set when max_items answers wait: flush now
        self._places = asyncio.Semaphore(max_unwritten)

    def add_generation(self, row: dict[str, Any]) -> None:
        """Buffer the result of an essay that holds a place (see :meth:`reserve`)."""
        self.generations.append(row)
        self._added()

    def add_judgment(self, row: dict[str, Any]) -> None:
        """Buffer the result of a verdict that holds a place (see :meth:`reserve`)."""
        self.judgments.append(row)
        self._added()

    def _added(self) -> None:
        if len(self.generations) + len(self.judgments) >= self.max_items:
            self._due.set()

    async def reserve(self) -> None:
        """Take a place for an item about to be asked for: wait while ``max_unwritten`` items
        are asked for and not yet on disk. The place is given back when the item's result
        (:meth:`add_generation`, :meth:`add_judgment`) is committed, or by :meth:`release` when
        the item ends without one."""
        if self._places.locked():
            self._due.set()  # the writes are what the requests wait for
        await self._places.acquire()

    def release(self) -> None:
        """Give back the place of an item that ended with no result to write (the job is
        stopping, or its request waits in a provider batch)."""
        self._places.release()

    def record_error(self, kind: str, item_id: int, message: str) -> None:
        """Keep one of the job's first item errors (``max_job_errors_kept``) for its row."""
        if self.first_error is None:
            self.first_error = message
        if self._errors_seen < self.max_errors_kept:
            self._errors_seen += 1
            self._errors.append({"kind": kind, "id": item_id, "error": message[:500]})

    async def loop(self, on_lease_lost: Callable[[], None]) -> None:
        """Flush every ``interval_s``, and as soon as ``max_items`` answers wait, until
        cancelled. While the database is unreachable the results stay buffered (and new
        requests wait, see :meth:`reserve`) and the flush waits it out; a lost lease drops the
        batch and calls ``on_lease_lost``."""
        label = f"job {self.job_id}"
        while True:
            if not self._due.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval_s):
                        await self._due.wait()
            # Cleared before the flush: answers that reach max_items while it writes set it
            # again, and the next flush follows at once.
            self._due.clear()
            try:
                await until_reachable(
                    self.flush, label=label, what="flush", first_delay_s=self.interval_s
                )
            except LeaseLost:
                log.warning("job %s: lease lost; the unwritten batch is dropped", self.job_id)
                on_lease_lost()
                return
            except Exception:
                log.exception("job %s: flush failed; will retry", self.job_id)

    async def flush(self) -> None:
        """Write what finished since the last flush in one transaction, one statement a table.

        The transaction first renews the lease (raising LeaseLost, writing nothing, when another
        worker holds it): the row lock it takes keeps a claimant out until the batch is
        committed, so a batch is never written by a runner that lost the job. A failed batch
        stays buffered for the next flush; replaying one whose commit went through unseen is
        harmless (updates by id, inserts that ignore conflicts, errors not appended twice).
        """
        async with self._lock:
            gens, self.generations = self.generations, []
            judgments, self.judgments = self.judgments, []
            pairs, self.pairs = self.pairs, []
            flags, self.near_duplicates = self.near_duplicates, []
            topics, self.done_topics = self.done_topics, []
            cached, self.cached_responses = self.cached_responses, []
            errors, self._errors = self._errors, []
            if not (gens or judgments or pairs or flags or topics or cached or errors):
                return
            try:
                async with transaction(self.sm) as s:
                    await self.fence(s)
                    if errors and self._errors_replayed:
                        kept = (await repo.get_job(s, self.job_id, for_update=True)).errors
                        errors = [e for e in errors if e not in kept]
                    await repo.insert_cached_responses(s, cached)
                    await repo.update_generations(s, gens)
                    await repo.update_judgments(s, judgments)
                    await repo.insert_pairs(s, pairs)
                    await repo.upsert_near_duplicates(s, flags)
                    await repo.mark_topics_done(s, self.job_id, topics)
                    await repo.append_errors(s, self.job_id, errors, self.max_errors_kept)
            except BaseException:
                # Put them back so the next flush writes them.
                self.generations[:0] = gens
                self.judgments[:0] = judgments
                self.pairs[:0] = pairs
                self.near_duplicates[:0] = flags
                self.done_topics[:0] = topics
                self.cached_responses[:0] = cached
                self._errors[:0] = errors
                self._errors_replayed = self._errors_replayed or bool(errors)
                raise
            self._errors_replayed = False
            # Their places are free: as many new items may be asked for.
            for _ in range(len(gens) + len(judgments)):
                self._places.release()
