"""The executor of a job's work: each topic's essays, then its judgments (by the job's judging
method), then its pairs — topics flow through independently (a pipeline), so a topic is judged
as soon as its own essays are in. Results go to the flusher; nothing here touches the database.

Every request is made within the job's budget (:meth:`Executor.issue`). A job that is stopping
(cancelled, or over its ``max_failure_rate``) makes no new request: items not started are left
as they are, and the finish step marks them cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from chatpgt.datagen.batches import JobBatches
from chatpgt.datagen.cache import ResponseCache
from chatpgt.datagen.dedup_step import drop_near_duplicates
from chatpgt.datagen.flusher import Flusher
from chatpgt.datagen.judges import JudgeCall, JudgmentItem, judge_method
from chatpgt.datagen.judges.base import WAITING_FOR_BATCH, Call, Issued
from chatpgt.datagen.models import Generation
from chatpgt.datagen.pairing import (
    PairingRule,
    corpus_pair_rows,
    decided_matchups,
    judged_pair_row,
    select_pairs,
)
from chatpgt.datagen.planner import JobPlan, JudgmentPlanner, TopicState, judgment_rows
from chatpgt.datagen.prompts import generation_messages
from chatpgt.datagen.schemas import DatagenJobCreate
from chatpgt.db.base import utcnow
from chatpgt.orchestration.status import ITEM_TERMINAL, ItemStatus
from chatpgt.providers.client import ProviderPool
from chatpgt.providers.types import ChatRequest, ProviderError
from chatpgt.settings import Settings

log = logging.getLogger(__name__)


class StopFlag:
    """Why the job is stopping (None while it is not): "cancelled", "max_failure_rate". The
    first reason given wins; ``on_stop`` is called once, with it (the runner cancels the work
    in flight: requests waiting for a provider's slot are not made)."""

    def __init__(self, on_stop: Callable[[str], None] = lambda reason: None) -> None:
        self.reason: str | None = None
        self._on_stop = on_stop

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._on_stop(reason)


class FailureWatch:
    """Counts the items this run finished; past ``max_rate`` failed (once ``min_items`` have
    finished) the job should stop. No limit when ``max_rate`` is None."""

    def __init__(self, max_rate: float | None, min_items: int) -> None:
        self.max_rate, self.min_items = max_rate, min_items
        self.finished = self.failed = 0

    def over(self, failed: bool) -> bool:
        self.finished += 1
        self.failed += failed
        return (
            self.max_rate is not None
            and self.finished >= self.min_items
            and self.failed / self.finished > self.max_rate
        )


class Executor:
    def __init__(
        self,
        job_id: int,
        plan: JobPlan,
        pool: ProviderPool,
        settings: Settings,
        flusher: Flusher,
        planner: JudgmentPlanner,
        stop: StopFlag,
        cache: ResponseCache | None = None,
        batches: JobBatches | None = None,
    ) -> None:
        self.job_id = job_id
        self.cache = cache
        self.batches = batches
        self.req = plan.req
        self.budget = plan.budget
        self.model_paths = plan.model_paths
        self.pool = pool
        self.settings = settings
        self.flusher = flusher
        self.planner = planner
        self.stop = stop
        self.watch = FailureWatch(self.req.max_failure_rate, settings.job_failure_rate_min_items)
        judge = self.req.judge
        self.method = judge_method(judge.method)
        self.judge_call = JudgeCall(
            spec=judge,
            model=self.model_paths.get(judge.model, judge.model),
            issue=self.issue,
            judge_ab=pool.judge_ab,
            parse_retries=settings.judge_parse_retries,
        )

    async def execute(self, topics: list[TopicState]) -> None:
        """Every unfinished topic's essays, then (each topic as soon as its own essays are in)
        its judgments and pairs.

        The essays are made by a fixed number of lanes (:func:`lane_count`: twice the
        generators' concurrency), each making one request at a time from one shared queue, so
        that the providers' slots stay full while no more than that many essays wait for one;
        a topic's judging starts as its last essay comes in (``_topic``, a task of its own), so
        its judgments take their turn in the same queues while other topics still generate.
        Nothing is created up front per item: a lane is one coroutine for many essays.
        """
        todo = [t for t in topics if t.stage != "done"]
        left: dict[int, int] = {}
        queue: list[tuple[TopicState, Generation]] = []
        for t in todo:
            pending = [g for g in t.generations if g.status not in ITEM_TERMINAL]
            left[t.topic_id] = len(pending)
            queue += [(t, g) for g in pending]
        self._topics: set[asyncio.Task[None]] = set()
        self._topic_error: BaseException | None = None
        for t in todo:
            if not left[t.topic_id]:  # its essays are in already (a resumed run)
                self._spawn_topic(t)
        if self.cache is not None:
            # One query per thousand essays says which are cached, so that a new job's requests
            # cost no lookup each.
            await self.cache.prefetch(self._generation_request(g) for _, g in queue)
        work = iter(queue)
        lanes = [
            asyncio.create_task(self._lane(work, left))
            for _ in range(min(len(queue), lane_count(self.req, self.pool)))
        ]
        try:
            await asyncio.gather(*lanes)
            while self._topics:
                await asyncio.gather(*self._topics)
        finally:
            for task in [*lanes, *self._topics]:
                task.cancel()
        if self._topic_error is not None:
            raise self._topic_error

    async def _lane(
        self, work: Iterator[tuple[TopicState, Generation]], left: dict[int, int]
    ) -> None:
        for t, g in work:
            if self._topic_error is not None:
                raise self._topic_error
            await self._generate(g)
            left[t.topic_id] -= 1
            if not left[t.topic_id]:
                self._spawn_topic(t)

    def _spawn_topic(self, t: TopicState) -> None:
        task = asyncio.create_task(self._topic(t))
        self._topics.add(task)
        task.add_done_callback(self._topic_done)

    def _topic_done(self, task: asyncio.Task[None]) -> None:
        self._topics.discard(task)
        if not task.cancelled() and task.exception() is not None and self._topic_error is None:
            self._topic_error = task.exception()

    async def issue(self, req: ChatRequest, call: Call | None = None) -> Issued:
        """Make one request (``pool.chat`` unless ``call`` says otherwise) within the budget.

        A chat request whose answer is in the response cache is answered from there, at $0
        (so even when the budget is spent); a new answer goes to the cache with the next flush.
        """
        if self.stop.reason is not None:
            if req.batch and self.batches is not None:
                # What a cancelled job's batches finished is kept: it is paid for already.
                answer = self.batches.lookup(self.batches.key(req))
                if answer is not None and answer.error is None:
                    return Issued(result=self.batches.result(answer))
            return Issued(skip=self.stop.reason)
        key = self.cache.key(req) if self.cache is not None and call is None else None
        if key is not None:
            assert self.cache is not None
            hit = await self.cache.get(key)
            if hit is not None:
                return Issued(result=hit)
        if req.batch and self.batches is not None:
            batch_key = self.batches.key(req)
            if not (
                self.req.batch_failures == "online"
                and self.batches.failed_retryably(batch_key)
                and self.batches.lookup(batch_key) is None
                and not self.batches.is_waiting(batch_key)
            ):
                return await self._batch_issue(req, key)
            # It failed inside a batch and the job asks such requests again online.
        if self.budget.exhausted:
            return Issued(skip="budget_exhausted")
        estimate = self.pool.estimate_cost(req)
        if not await self.budget.reserve(estimate):
            return Issued(skip="budget_exhausted")
        try:
            result = await (call or self.pool.chat)(req)
        except ProviderError as exc:
            await self.budget.settle(estimate, exc.cost_usd)
            return Issued(error=exc)
        except BaseException:
            await self.budget.settle(estimate, Decimal(0))
            raise
        await self.budget.settle(estimate, result.cost_usd)
        if key is not None:
            entry = ResponseCache.entry(key, req, result)
            if entry is not None:
                self.flusher.cached_responses.append(entry)
        return Issued(result=result)

    async def _batch_issue(self, req: ChatRequest, cache_key: str | None) -> Issued:
        """A request of a generator or judge in batch mode: its stored batch answer (or the
        error it ended with), else it waits in an open batch or is collected for a new one
        (chatpgt.datagen.batches); a waiting item is left as it is."""
        batches = self.batches
        assert batches is not None
        key = batches.key(req)
        answer = batches.lookup(key)
        if answer is not None:
            if answer.error is not None:
                return Issued(error=batches.error(key, answer))
            result = batches.result(answer)
            await self.budget.settle(Decimal(0), result.cost_usd)
            if cache_key is not None:
                entry = ResponseCache.entry(cache_key, req, result)
                if entry is not None:
                    self.flusher.cached_responses.append(entry)
            return Issued(result=result)
        if batches.is_waiting(key):
            return Issued(skip=WAITING_FOR_BATCH)
        estimate = batches.estimate(req)
        if self.budget.exhausted or not self.budget.commit(estimate):
            return Issued(skip="budget_exhausted")
        batches.collect(key, req, estimate)
        return Issued(skip=WAITING_FOR_BATCH)

    def _batch_waiting(self) -> bool:
        return self.batches is not None and self.batches.waiting

    def _finished(self, kind: str, item_id: int, update: dict[str, Any]) -> None:
        """Book one finished item: its error for the job's row, and the failure rate."""
        failed = update["status"] == ItemStatus.FAILED
        if failed:
            self.flusher.record_error(kind, item_id, update["error"] or "failed")
        if update["status"] in (ItemStatus.SUCCEEDED, ItemStatus.FAILED) and self.watch.over(
            failed
        ):
            if self.stop.reason is None:
                log.warning(
                    "job %s: %d of %d finished items failed, over max_failure_rate %s; stopping",
                    self.job_id,
                    self.watch.failed,
                    self.watch.finished,
                    self.req.max_failure_rate,
                )
            self.stop.request("max_failure_rate")

    # --- one topic -------------------------------------------------------------------------

    async def _topic(self, t: TopicState) -> None:
        await asyncio.gather(
            *(self._generate(g) for g in t.generations if g.status not in ITEM_TERMINAL)
        )
        if self._batch_waiting() and not all(g.status in ITEM_TERMINAL for g in t.generations):
            return  # essays in a provider batch: judged in a later run, once all are in
        ok = [g for g in t.generations if g.status == ItemStatus.SUCCEEDED]
        # The job's dedup option: near-duplicates are flagged, neither judged nor paired.
        ok = drop_near_duplicates(self.job_id, self.req.dedup, t, ok, self.flusher)
        pairs = []
        if self.req.include_corpus_pairs:
            pairs = corpus_pair_rows(
                self.job_id,
                t,
                ok,
                self.settings.corpus_pair_confidence,
                match_length=self.req.corpus_pair_length == "matched",
            )
        if len(ok) >= 2:
            judged = await self._judge_topic(t, ok)
            if judged is None and self._batch_waiting():
                return  # verdicts in a provider batch: paired in a later run
            pairs += judged or []
        if not all(g.status in ITEM_TERMINAL for g in t.generations):
            return  # stopping (budget, cancel, failure rate): leave it for the finish step
        self.flusher.pairs += pairs
        self.flusher.done_topics.append(t.topic_id)
        for g in t.generations:  # the texts are in the pairs now; free them
            g.text = None

    async def _judge_topic(
        self, t: TopicState, ok: list[Generation]
    ) -> list[dict[str, Any]] | None:
        """The topic's judged pairs; None while some of its judgments are not terminal."""
        judge = self.req.judge
        rows = judgment_rows(
            self.job_id,
            t.topic_id,
            [g.id for g in ok],
            provider=judge.provider,
            model=judge.model,
            both_orders=judge.both_orders,
        )
        # Planned rows only: if this run dies before its results are flushed, the next run
        # redoes the essays and then judges these rows against the new texts.
        judgments = await self.planner.plan(t.topic_id, rows)
        texts = {g.id: g.text or "" for g in ok}
        wanted = {(r["generation_a_id"], r["generation_b_id"]) for r in rows}
        judgments = [j for j in judgments if (j.generation_a_id, j.generation_b_id) in wanted]
        await asyncio.gather(
            *(self._judge(j, t.prompt, texts) for j in judgments if j.status not in ITEM_TERMINAL)
        )
        if not all(j.status in ITEM_TERMINAL for j in judgments):
            return None
        results = decided_matchups(
            self.method, judgments, (g.id for g in ok), both_orders=judge.both_orders
        )
        gens = {g.id: g for g in ok}
        chosen = select_pairs(PairingRule(self.req.pairing), sorted(gens), results)
        return [judged_pair_row(self.job_id, t, r, gens, judge.model) for r in chosen]

    # --- one item --------------------------------------------------------------------------

    def _generation_request(self, g: Generation) -> ChatRequest:
        params = g.params
        seed = params.get("seed")
        return ChatRequest(
            provider=g.provider,
            model=self.model_paths.get(g.model, g.model),
            messages=generation_messages(g.prompt, g.system_prompt),
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
            max_tokens=params.get("max_tokens"),
            extra={"seed": seed} if seed is not None else {},
            sample_index=g.sample_index,
            batch=params.get("mode") == "batch",
        )

    async def _generate(self, g: Generation) -> None:
        # Its place among the items asked for and not yet on disk (Flusher.reserve), held
        # until its result is committed.
        await self.flusher.reserve()
        try:
            issued = await self.issue(self._generation_request(g))
        except BaseException:
            self.flusher.release()
            raise
        if issued.stopped:
            self.flusher.release()
            return  # the finish step marks it cancelled
        update = _blank_generation_result(g)
        if issued.skip is not None:
            update.update(status="skipped", error=f"not requested: {issued.skip}")
        elif issued.error is not None:
            error = issued.error
            update.update(
                status="failed",
                error=error.message,
                attempts=g.attempts + error.attempts,
                prompt_tokens=error.prompt_tokens,
                completion_tokens=error.completion_tokens,
                cost_usd=error.cost_usd,
            )
        else:
            result = issued.result
            text = result.text.strip()
            update.update(
                status="succeeded" if text else "failed",
                error=None if text else "the provider returned an empty essay",
                text=text or None,
                attempts=g.attempts + result.attempts,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                cost_usd=result.cost_usd,
                latency_ms=result.latency_ms,
                finish_reason=result.finish_reason,
                cache_hit=result.cache_hit,
                saved_usd=result.saved_usd,
            )
        for key, value in update.items():
            setattr(g, key, value)
        self.flusher.add_generation({"_id": g.id, **update})
        self._finished("generation", g.id, update)

    async def _judge(self, j: JudgmentItem, prompt: str, texts: dict[int, str]) -> None:
        await self.flusher.reserve()  # as for an essay (see _generate)
        try:
            update = await self.method.judge(
                self.judge_call, j, prompt, texts[j.generation_a_id], texts[j.generation_b_id]
            )
        except BaseException:
            self.flusher.release()
            raise
        if update is None:
            self.flusher.release()
            return  # stopping: the finish step marks it cancelled
        for key, value in update.items():
            setattr(j, key, value)
        self.flusher.add_judgment({"_id": j.id, **update})
        self._finished("judgment", j.id, update)


def max_unwritten(req: DatagenJobCreate, pool: ProviderPool, flush_max_items: int) -> int:
    """The most items a job keeps asked for and not yet on disk (:meth:`Flusher.reserve`): the
    concurrency of all its providers (generators' and judge's, each counted once), so that
    their slots stay full, and room for the answers that wait for a write: half as many again,
    at least ``flush_max_items`` (answers come back at concurrency / latency a second and wait
    up to a flush interval and a flush for their commit; with less room, slots stand idle
    meanwhile). A crash costs at most this many requests."""
    providers = {g.provider for g in req.generators} | {req.judge.provider}
    slots = sum(pool.configs[p].max_concurrency for p in providers if p in pool.configs)
    return max(1, slots + max(flush_max_items, slots // 2))


def lane_count(req: DatagenJobCreate, pool: ProviderPool) -> int:
    """How many essays a job keeps asked for at once: twice the concurrency of its generators'
    providers (each counted once), so that every slot has a request waiting for it; at least 1."""
    providers = {g.provider for g in req.generators}
    slots = sum(pool.configs[p].max_concurrency for p in providers if p in pool.configs)
    return max(1, 2 * slots)


def _blank_generation_result(g: Generation) -> dict[str, Any]:
    """Every result column (the batch update writes them all), as for a request not made."""
    return {
        "status": g.status,
        "error": None,
        "text": None,
        "attempts": g.attempts,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": Decimal(0),
        "latency_ms": None,
        "finish_reason": None,
        "finished_at": utcnow(),
        "cache_hit": False,
        "saved_usd": Decimal(0),
    }
