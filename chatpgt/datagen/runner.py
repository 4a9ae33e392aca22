"""Runs one datagen job: plan rows, generate, judge, pair — resumable from the rows at any point.

The runner holds the job's lease in Postgres while it works, so a redelivered task never runs a
job twice; if the worker dies, the lease runs out and the next delivery resumes from the rows:
succeeded rows are kept, unfinished ones are done again. Topics flow through the stages
independently (a pipeline): a topic is judged as soon as its own essays are in.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository as repo
from chatpgt.datagen.budget import Budget
from chatpgt.datagen.judging import (
    JudgeParseError,
    Outcome,
    Verdict,
    combine,
    combine_probabilities,
    parse_verdict,
)
from chatpgt.datagen.models import Generation
from chatpgt.datagen.pairing import PairingRule, matchups, select_pairs
from chatpgt.datagen.prompts import (
    DEFAULT_PROMPT_TEMPLATES,
    DEFAULT_SYSTEM_PROMPT,
    choose_template,
    judge_messages,
    render_prompt,
)
from chatpgt.datagen.schemas import DatagenJobCreate
from chatpgt.datagen.state import ITEM_TERMINAL, JOB_TERMINAL
from chatpgt.db.session import is_unavailable, make_engine, make_sessionmaker, transaction
from chatpgt.pairs.stats import job_work_totals
from chatpgt.providers.ab import confidence_from_ab
from chatpgt.providers.client import ProviderPool
from chatpgt.providers.types import ABResult, ChatRequest, ProviderError
from chatpgt.settings import Settings

log = logging.getLogger(__name__)

CORPUS_REASONING = "The original essay from the corpus is preferred to a generated essay."
_CHUNK = 1000
# The longest wait between two tries while the database is unreachable.
_DB_RETRY_MAX_S = 1.0


class LeaseLost(Exception):
    """Another worker took the job over (our lease expired); stop without touching rows."""


class _Outage:
    """Backoff and logging for one unit of work while the database is unreachable: one warning
    when it goes away, one line when it is back (not one traceback a try)."""

    def __init__(self, job_id: int, what: str, first_delay_s: float) -> None:
        self.job_id, self.what, self.first_delay_s = job_id, what, first_delay_s
        self.delay_s = first_delay_s
        self.since: float | None = None

    def failed(self, exc: BaseException) -> float:
        """Record a failed try; returns how long to wait before the next one."""
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "job %s: database unreachable (%s: %s); retrying until it is back",
                self.job_id,
                self.what,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
        else:
            self.delay_s = min(self.delay_s * 2, _DB_RETRY_MAX_S)
        return self.delay_s

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning(
                "job %s: database back after %.1f s (%s)",
                self.job_id,
                time.monotonic() - self.since,
                self.what,
            )
        self.since, self.delay_s = None, self.first_delay_s


_T = TypeVar("_T")


def _now() -> datetime:
    return datetime.now(UTC)


async def _to_the_end(work: Awaitable[_T]) -> _T:
    """Await a unit of database work to its end even when the caller is cancelled (the cancel
    is re-raised afterwards). A transaction cut off mid-statement is rolled back at once by
    Postgres, but an aiosqlite connection cut off that way can keep SQLite's write lock and
    stall every other writer."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class JudgmentItem:
    """A judgment row as the runner works on it (lighter than an ORM object)."""

    id: int
    topic_id: int
    generation_a_id: int
    generation_b_id: int
    status: str
    attempts: int
    winner: str | None = None
    winner_generation_id: int | None = None
    confidence: int | None = None
    reasoning: str | None = None
    cost_usd: Decimal = Decimal(0)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int | None = None
    raw_answer: str | None = None
    finished_at: datetime | None = None


@dataclass
class TopicState:
    topic_id: int
    title: str
    prompt: str
    reference_text: str | None
    stage: str
    generations: list[Generation] = field(default_factory=list)


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
        self.stop_reason: str | None = None
        self._lease_lost = False
        self._gen_updates: list[dict[str, Any]] = []
        self._judgment_updates: list[dict[str, Any]] = []
        self._pairs: list[dict[str, Any]] = []
        self._done_topics: list[int] = []
        self._errors: list[dict[str, Any]] = []
        self._errors_seen = 0
        self._errors_replayed = False
        self._flush_lock = asyncio.Lock()
        self._main: asyncio.Task[None] | None = None
        self.model_paths: dict[str, str] = {}
        self._plan_waiting: list[tuple[int, list[dict[str, Any]], asyncio.Future[list[Any]]]] = []
        self._plan_wake = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> str:
        """Run the job to a terminal state. Returns the final status, or "busy" when another
        live worker holds the job, or the status it already had when it was finished."""
        outcome = await self._db_retry("claim", self._claim)
        if outcome != "claimed":
            return outcome
        try:
            await self._db_retry("plan", self._plan)
            topics = await self._db_retry("load", self._load)
            beat = asyncio.create_task(self._heartbeat())
            flusher = asyncio.create_task(self._flush_loop())
            planner = asyncio.create_task(self._planner_loop())
            self._main = asyncio.create_task(self._execute(topics))
            try:
                await self._main
            except asyncio.CancelledError:
                if self.stop_reason is None and not self._lease_lost:
                    raise
            finally:
                beat.cancel()
                flusher.cancel()
                planner.cancel()
                # Let a unit of work in flight end (see _to_the_end) before the last flush.
                await asyncio.wait([beat, flusher, planner])
            if self._lease_lost:
                raise LeaseLost(f"datagen job {self.job_id}: lease lost")
            await self._db_retry("last flush", self._flush)
            status = await self._db_retry("finish", self._finish)
            await self._summarise()
            return status
        except LeaseLost:
            log.warning("job %s: lease taken over by another worker; stopping", self.job_id)
            return "lease_lost"
        except BaseException:
            # Give the job back at once so a retry (or another worker) can resume it.
            try:
                async with transaction(self.sm) as s:
                    await repo.release_lease(s, self.job_id, self.owner)
            except Exception:  # the database may be what failed; the lease then just expires
                log.exception("job %s: could not release the lease", self.job_id)
            raise

    async def _claim(self) -> str:
        async with transaction(self.sm) as s:
            return await repo.claim(s, self.job_id, self.owner, self.settings.job_lease_s)

    async def _db_retry(self, what: str, work: Callable[[], Awaitable[_T]]) -> _T:
        """Run a unit of database work until it goes through. While the database is
        unreachable (down, restarting; see ``is_unavailable``) wait with backoff and run it
        again, so ``work`` must be safe to replay: a transaction cut off at its commit may have
        committed. Any other error propagates."""
        outage = _Outage(self.job_id, what, self.settings.db_flush_interval_s)
        while True:
            try:
                result = await _to_the_end(work())
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                await asyncio.sleep(outage.failed(exc))
                continue
            outage.succeeded()
            return result

    async def _plan(self) -> None:
        """Insert the job's topic prompts and generation rows; a no-op when already planned."""
        async with transaction(self.sm) as s:
            job = await repo.get_job(s, self.job_id)
            self.request = job.request
            self.req = DatagenJobCreate.model_validate(
                {k: v for k, v in job.request.items() if k != "topic_ids"}
            )
            self.budget = Budget(job.budget_usd, Decimal(0))
            # A local provider may name a trained model from the registry (on-policy candidates
            # or judge): it runs from the model's directory.
            local = {name for name, cfg in self.pool.configs.items() if cfg.kind == "local"}
            wanted = {g.model for g in self.req.generators if g.provider in local}
            if self.req.judge.provider in local:
                wanted.add(self.req.judge.model)
            self.model_paths = await repo.registered_model_paths(s, sorted(wanted))
            templates = self.req.prompt_templates or list(DEFAULT_PROMPT_TEMPLATES)
            topics = await repo.load_topics(s, job.request["topic_ids"])
            jt_rows = []
            for topic in topics:
                index = choose_template(self.job_id, topic.id, templates)
                jt_rows.append(
                    {
                        "job_id": self.job_id,
                        "topic_id": topic.id,
                        "template_index": index,
                        "prompt": render_prompt(templates[index], topic.title),
                        "stage": "generating",
                    }
                )
            for i in range(0, len(jt_rows), _CHUNK):
                await repo.insert_job_topics(s, jt_rows[i : i + _CHUNK])
            system = (
                self.req.system_prompt
                if self.req.system_prompt is not None
                else DEFAULT_SYSTEM_PROMPT
            )
            rows = []
            for jt, _topic in await repo.load_job_topics(s, self.job_id):
                for gen in self.req.generators:
                    for sample in range(gen.samples_per_topic):
                        rows.append(
                            {
                                "job_id": self.job_id,
                                "topic_id": jt.topic_id,
                                "generator_key": gen.key,
                                "provider": gen.provider,
                                "model": gen.model,
                                "params": gen.params(),
                                "sample_index": sample,
                                "system_prompt": system,
                                "prompt": jt.prompt,
                                "status": "pending",
                                "attempts": 0,
                                "prompt_tokens": 0,
                                "completion_tokens": 0,
                                "cost_usd": Decimal(0),
                            }
                        )
            for i in range(0, len(rows), _CHUNK):
                await repo.insert_generations(s, rows[i : i + _CHUNK])

    async def _load(self) -> list[TopicState]:
        async with transaction(self.sm) as s:
            topics = {
                jt.topic_id: TopicState(jt.topic_id, t.title, jt.prompt, t.reference_text, jt.stage)
                for jt, t in await repo.load_job_topics(s, self.job_id)
            }
            spent = Decimal(0)
            for g in await repo.load_generations(s, self.job_id):
                topics[g.topic_id].generations.append(g)
                spent += g.cost_usd
            for j in await repo.load_judgments(s, self.job_id):
                spent += j.cost_usd
            s.expunge_all()
        self.budget.spent = spent
        return list(topics.values())

    async def _execute(self, topics: list[TopicState]) -> None:
        await asyncio.gather(*(self._topic(t) for t in topics if t.stage != "done"))

    async def _finish(self) -> str:
        async with transaction(self.sm) as s:
            if self.stop_reason == "cancelled":
                await repo.cancel_pending_items(s, self.job_id)
                ok = await repo.transition(
                    s, self.job_id, "cancelled", owner=self.owner, stop_reason="cancelled"
                )
                return "cancelled" if ok else await self._refused(s)
            await repo.close_orphans(
                s, self.job_id, "not needed: the essays it depends on did not all succeed"
            )
            counts = (await repo.job_counts(s, [self.job_id]))[self.job_id]
            gens = counts["generations"]
            error = None
            if self.budget.exhausted:
                skipped = gens.get("skipped", 0) + counts["judgments"].get("skipped", 0)
                error = (
                    f"budget_usd {self.budget.limit} reached (spent {self.budget.spent:.6f}); "
                    f"{skipped} requests were not made"
                )
            if sum(gens.values()) and not gens.get("succeeded") and not self.budget.exhausted:
                first = self._first_error or "no generation succeeded"
                ok = await repo.transition(
                    s,
                    self.job_id,
                    "failed",
                    owner=self.owner,
                    error=f"no generation succeeded; first error: {first}",
                )
                return "failed" if ok else await self._refused(s)
            ok = await repo.transition(
                s,
                self.job_id,
                "succeeded",
                owner=self.owner,
                stop_reason="budget_exhausted" if self.budget.exhausted else None,
                error=error,
            )
            return "succeeded" if ok else await self._refused(s)

    async def _summarise(self) -> None:
        """Store the finished job's judge and cost summary now, so that the first GET
        /pairs/stats after it does not scan the job's work. Best effort: a read computes a
        missing summary itself."""
        try:
            async with transaction(self.sm) as s:
                await job_work_totals(s, [self.job_id])
        except Exception:
            log.warning("job %s: its stats summary is left to the next read", self.job_id)

    async def _refused(self, s: AsyncSession) -> str:
        """What the run ends with when its final transition was refused: the job's status when
        it is already terminal (e.g. an earlier try of this transition committed but its answer
        was lost with the connection), "lease_lost" otherwise."""
        status = (await repo.get_job(s, self.job_id)).status
        return status if status in JOB_TERMINAL else "lease_lost"

    _first_error: str | None = None

    # --- background: lease, cancel, flush --------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew the lease and read the cancel flag every ``job_heartbeat_s``. While the
        database is unreachable the renewals fail and the lease may run out: the first renewal
        that goes through tells whether the job is still ours (nobody took it over) or not."""
        outage = _Outage(self.job_id, "heartbeat", self.settings.job_heartbeat_s)
        while True:
            await asyncio.sleep(self.settings.job_heartbeat_s)
            try:
                ours, cancel = await _to_the_end(self._renew_lease())
            except Exception as exc:
                if is_unavailable(exc):
                    outage.failed(exc)
                else:
                    log.exception("job %s: heartbeat failed; retrying", self.job_id)
                continue
            outage.succeeded()
            if not ours:
                self._lease_lost = True
            elif cancel and self.stop_reason is None:
                self.stop_reason = "cancelled"
            if (self._lease_lost or self.stop_reason == "cancelled") and self._main:
                self._main.cancel()
                return

    def _stop_lease_lost(self) -> None:
        self._lease_lost = True
        if self._main:
            self._main.cancel()

    async def _renew_lease(self) -> tuple[bool, bool]:
        async with transaction(self.sm) as s:
            return await repo.renew_lease(s, self.job_id, self.owner, self.settings.job_lease_s)

    async def _flush_loop(self) -> None:
        outage = _Outage(self.job_id, "flush", self.settings.db_flush_interval_s)
        delay = self.settings.db_flush_interval_s
        while True:
            await asyncio.sleep(delay)
            try:
                await _to_the_end(self._flush())
            except LeaseLost:
                log.warning("job %s: lease lost; the unwritten batch is dropped", self.job_id)
                self._stop_lease_lost()
                return
            except Exception as exc:
                if is_unavailable(exc):  # results stay buffered; back off while it is down
                    delay = outage.failed(exc)
                else:
                    log.exception("job %s: flush failed; will retry", self.job_id)
                continue
            outage.succeeded()
            delay = self.settings.db_flush_interval_s

    async def _flush(self) -> None:
        """Write what finished since the last flush in one transaction, one statement a table.

        Results, pairs and finished topics are written together and in order, so a crash never
        leaves a pair whose essays or verdicts are not on disk: it loses the whole batch, which
        the next run redoes.

        The transaction first renews the lease (raising LeaseLost, writing nothing, when another
        worker holds it): the row lock it takes keeps a claimant out until the batch is
        committed, so a batch is never written by a runner that lost the job. A failed batch
        stays buffered for the next flush; replaying one whose commit went through unseen is
        harmless (updates by id, inserts that ignore conflicts, errors not appended twice).
        """
        async with self._flush_lock:
            gens, self._gen_updates = self._gen_updates, []
            judgments, self._judgment_updates = self._judgment_updates, []
            pairs, self._pairs = self._pairs, []
            topics, self._done_topics = self._done_topics, []
            errors, self._errors = self._errors, []
            if not (gens or judgments or pairs or topics or errors):
                return
            try:
                async with transaction(self.sm) as s:
                    ours, _ = await repo.renew_lease(
                        s, self.job_id, self.owner, self.settings.job_lease_s
                    )
                    if not ours:
                        raise LeaseLost(f"datagen job {self.job_id}: lease lost")
                    if errors and self._errors_replayed:
                        kept = (await repo.get_job(s, self.job_id, for_update=True)).errors
                        errors = [e for e in errors if e not in kept]
                    await repo.update_generations(s, gens)
                    await repo.update_judgments(s, judgments)
                    await repo.insert_pairs(s, pairs)
                    await repo.mark_topics_done(s, self.job_id, topics)
                    await repo.append_errors(
                        s, self.job_id, errors, self.settings.max_job_errors_kept
                    )
            except BaseException:
                # Put them back so the next flush writes them.
                self._gen_updates[:0] = gens
                self._judgment_updates[:0] = judgments
                self._pairs[:0] = pairs
                self._done_topics[:0] = topics
                self._errors[:0] = errors
                self._errors_replayed = self._errors_replayed or bool(errors)
                raise
            self._errors_replayed = False

    async def _planner_loop(self) -> None:
        """Insert judgment rows for all topics that became ready since the last round, at once."""
        while True:
            await self._plan_wake.wait()
            await asyncio.sleep(self.settings.db_flush_interval_s)  # let more topics join
            self._plan_wake.clear()
            batch, self._plan_waiting = self._plan_waiting, []
            try:
                # Planning is an INSERT ... ON CONFLICT DO NOTHING and a read: safe to replay.
                planned = await self._db_retry(
                    "plan judgments", functools.partial(self._plan_batch, batch)
                )
            except Exception as exc:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, LeaseLost):
                    log.warning("job %s: lease lost; judgments left unplanned", self.job_id)
                    self._stop_lease_lost()
                    return
                continue
            for topic_id, _, fut in batch:
                if not fut.done():
                    fut.set_result(planned[topic_id])

    async def _plan_batch(
        self, batch: list[tuple[int, list[dict[str, Any]], asyncio.Future[list[Any]]]]
    ) -> dict[int, list[Any]]:
        async with transaction(self.sm) as s:
            # Fenced like a flush: a runner that lost the job plans nothing more.
            ours, _ = await repo.renew_lease(s, self.job_id, self.owner, self.settings.job_lease_s)
            if not ours:
                raise LeaseLost(f"datagen job {self.job_id}: lease lost")
            return await repo.plan_judgments(
                s, self.job_id, {topic_id: rows for topic_id, rows, _ in batch}
            )

    async def _plan_judgments(
        self, topic_id: int, rows: list[dict[str, Any]]
    ) -> list[JudgmentItem]:
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._plan_waiting.append((topic_id, rows, fut))
        self._plan_wake.set()
        return [JudgmentItem(**row._mapping) for row in await fut]

    def _record_error(self, kind: str, item_id: int, message: str) -> None:
        if self._first_error is None:
            self._first_error = message
        if self._errors_seen < self.settings.max_job_errors_kept:
            self._errors_seen += 1
            self._errors.append({"kind": kind, "id": item_id, "error": message[:500]})

    # --- one topic -------------------------------------------------------------------------

    async def _topic(self, t: TopicState) -> None:
        await asyncio.gather(
            *(self._generate(g) for g in t.generations if g.status not in ITEM_TERMINAL)
        )
        ok = [g for g in t.generations if g.status == "succeeded"]
        pairs = self._corpus_pairs(t, ok) if self.req.include_corpus_pairs else []
        if len(ok) >= 2:
            pairs += await self._judge_topic(t, ok)
        if not all(g.status in ITEM_TERMINAL for g in t.generations):
            return  # stopping (budget or cancel): leave the topic for the finish step
        self._pairs += pairs
        self._done_topics.append(t.topic_id)
        for g in t.generations:  # the texts are in the pairs now; free them
            g.text = None

    async def _judge_topic(self, t: TopicState, ok: list[Generation]) -> list[dict[str, Any]]:
        judge = self.req.judge
        rows = []
        for low, high in matchups(g.id for g in ok):
            orders = [(low, high), (high, low)] if judge.both_orders else [(low, high)]
            for a, b in orders:
                rows.append(
                    {
                        "job_id": self.job_id,
                        "topic_id": t.topic_id,
                        "generation_a_id": a,
                        "generation_b_id": b,
                        "judge_provider": judge.provider,
                        "judge_model": judge.model,
                        "status": "pending",
                        "attempts": 0,
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                        "cost_usd": Decimal(0),
                    }
                )
        # Planned rows only: if this run dies before its results are flushed, the next run
        # redoes the essays and then judges these rows against the new texts.
        judgments = await self._plan_judgments(t.topic_id, rows)
        texts = {g.id: g.text or "" for g in ok}
        wanted = {(r["generation_a_id"], r["generation_b_id"]) for r in rows}
        judgments = [j for j in judgments if (j.generation_a_id, j.generation_b_id) in wanted]
        await asyncio.gather(
            *(self._judge(j, t.prompt, texts) for j in judgments if j.status not in ITEM_TERMINAL)
        )
        if not all(j.status in ITEM_TERMINAL for j in judgments):
            return []
        by_order = {
            (j.generation_a_id, j.generation_b_id): j for j in judgments if j.status == "succeeded"
        }
        outcomes: dict[tuple[int, int], Outcome] = {}
        for low, high in matchups(g.id for g in ok):
            first = by_order.get((low, high))
            second = by_order.get((high, low))
            if first is None or (judge.both_orders and second is None):
                continue  # a failed verdict decides nothing
            if judge.method == "ab_probability" and second is not None:
                outcomes[(low, high)] = combine_probabilities(
                    _verdict(first), _p_a(first), _verdict(second), _p_a(second)
                )
            else:
                outcomes[(low, high)] = combine(
                    _verdict(first), _verdict(second) if second is not None else None
                )
        gens = {g.id: g for g in ok}
        chosen = select_pairs(PairingRule(self.req.pairing), sorted(gens), outcomes)
        return [self._judged_pair(t, o, gens) for o in chosen]

    def _judged_pair(
        self, t: TopicState, o: Outcome, gens: dict[int, Generation]
    ) -> dict[str, Any]:
        assert o.winner_id is not None and o.loser_id is not None and o.confidence is not None
        win, lose = gens[o.winner_id], gens[o.loser_id]
        return {
            "job_id": self.job_id,
            "topic_id": t.topic_id,
            "source": "judged",
            "topic": t.title,
            "prompt": t.prompt,
            "chosen": win.text,
            "rejected": lose.text,
            "chosen_model": win.model,
            "rejected_model": lose.model,
            "chosen_generation_id": win.id,
            "rejected_generation_id": lose.id,
            "judgment_reasoning": o.reasoning,
            "confidence": o.confidence,
            "judge_model": self.req.judge.model,
            "judgment_ids": [v.judgment_id for v in o.verdicts],
            "verdicts": [
                v.as_json(order) for v, order in zip(o.verdicts, ("AB", "BA"), strict=False)
            ],
        }

    def _corpus_pairs(self, t: TopicState, ok: list[Generation]) -> list[dict[str, Any]]:
        if not t.reference_text:
            return []
        return [
            {
                "job_id": self.job_id,
                "topic_id": t.topic_id,
                "source": "corpus",
                "topic": t.title,
                "prompt": t.prompt,
                "chosen": t.reference_text,
                "rejected": g.text,
                "chosen_model": "corpus",
                "rejected_model": g.model,
                "chosen_generation_id": None,
                "rejected_generation_id": g.id,
                "judgment_reasoning": CORPUS_REASONING,
                "confidence": self.settings.corpus_pair_confidence,
                "judge_model": None,
                "judgment_ids": [],
                "verdicts": [],
            }
            for g in ok
        ]

    # --- one request -----------------------------------------------------------------------

    async def _issue(
        self, req: ChatRequest, call: Callable[[ChatRequest], Awaitable[Any]] | None = None
    ) -> tuple[Any, ProviderError | None, str | None]:
        """Make one request (``pool.chat`` unless ``call`` says otherwise) within the budget.

        Returns (result, error, skip reason).
        """
        if self.stop_reason is not None or self.budget.exhausted:
            return None, None, self.stop_reason or "budget_exhausted"
        estimate = self.pool.estimate_cost(req)
        if not await self.budget.reserve(estimate):
            return None, None, "budget_exhausted"
        try:
            result = await (call or self.pool.chat)(req)
        except ProviderError as exc:
            await self.budget.settle(estimate, exc.cost_usd)
            return None, exc, None
        except BaseException:
            await self.budget.settle(estimate, Decimal(0))
            raise
        await self.budget.settle(estimate, result.cost_usd)
        return result, None, None

    async def _generate(self, g: Generation) -> None:
        params = g.params
        messages = [{"role": "user", "content": g.prompt}]
        if g.system_prompt:
            messages.insert(0, {"role": "system", "content": g.system_prompt})
        req = ChatRequest(
            provider=g.provider,
            model=self.model_paths.get(g.model, g.model),
            messages=messages,
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
            max_tokens=params.get("max_tokens"),
        )
        result, error, skip = await self._issue(req)
        update = _blank_generation_result(g)
        if skip is not None:
            update.update(status="skipped", error=f"not requested: {skip}")
        elif error is not None:
            update.update(
                status="failed",
                error=error.message,
                attempts=g.attempts + error.attempts,
                prompt_tokens=error.prompt_tokens,
                completion_tokens=error.completion_tokens,
                cost_usd=error.cost_usd,
            )
            self._record_error("generation", g.id, error.message)
        else:
            assert result is not None
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
            )
            if not text:
                self._record_error("generation", g.id, "the provider returned an empty essay")
        if skip == "cancelled":
            return  # finish step marks cancelled items
        for key, value in update.items():
            setattr(g, key, value)
        self._gen_updates.append({"_id": g.id, **update})

    async def _judge(self, j: JudgmentItem, prompt: str, texts: dict[int, str]) -> None:
        judge = self.req.judge
        if judge.method == "ab_probability":
            await self._judge_by_probability(j, prompt, texts)
            return
        req = ChatRequest(
            provider=judge.provider,
            model=self.model_paths.get(judge.model, judge.model),
            messages=judge_messages(prompt, texts[j.generation_a_id], texts[j.generation_b_id]),
            temperature=judge.temperature,
            max_tokens=judge.max_tokens,
            json_mode=True,
        )
        attempts, pt, ct, cost = j.attempts, 0, 0, Decimal(0)
        update = _blank_judgment_result(j)
        for _ in range(self.settings.judge_parse_retries + 1):
            result, error, skip = await self._issue(req)
            if skip is not None:
                if skip == "cancelled":
                    return
                update.update(status="skipped", error=f"not requested: {skip}")
                break
            if error is not None:
                attempts += error.attempts
                pt, ct, cost = (
                    pt + error.prompt_tokens,
                    ct + error.completion_tokens,
                    cost + error.cost_usd,
                )
                update.update(status="failed", error=error.message)
                self._record_error("judgment", j.id, error.message)
                break
            assert result is not None
            attempts += result.attempts
            pt, ct = pt + result.prompt_tokens, ct + result.completion_tokens
            cost += result.cost_usd
            update.update(raw_answer=result.text[:20_000], latency_ms=result.latency_ms)
            try:
                verdict = parse_verdict(result.text)
            except JudgeParseError as exc:
                update.update(
                    status="failed",
                    error=(
                        f"unparseable judge answer after {attempts - j.attempts} attempt(s): {exc}"
                    ),
                )
                continue
            winner = j.generation_a_id if verdict.winner == "A" else j.generation_b_id
            update.update(
                status="succeeded",
                error=None,
                winner=verdict.winner,
                winner_generation_id=winner,
                reasoning=verdict.reasoning,
                confidence=verdict.confidence,
            )
            break
        if update.get("status") == "failed" and "unparseable" in (update.get("error") or ""):
            self._record_error("judgment", j.id, update["error"])
        update.update(
            attempts=attempts,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            finished_at=_now(),
        )
        for key, value in update.items():
            setattr(j, key, value)
        self._judgment_updates.append({"_id": j.id, **update})

    async def _judge_by_probability(
        self, j: JudgmentItem, prompt: str, texts: dict[int, str]
    ) -> None:
        """One forward pass (or a one-token completion with logprobs): the verdict is the letter
        with the higher probability, the confidence comes from their ratio. A judge that puts
        almost no probability on either letter fails the judgment rather than decide it."""
        judge = self.req.judge
        req = ChatRequest(
            provider=judge.provider,
            model=self.model_paths.get(judge.model, judge.model),
            messages=judge_messages(
                prompt, texts[j.generation_a_id], texts[j.generation_b_id], one_letter=True
            ),
            temperature=0.0,
            max_tokens=1,
        )
        update = _blank_judgment_result(j)
        result, error, skip = await self._issue(req, self.pool.judge_ab)
        if skip is not None:
            if skip == "cancelled":
                return
            update.update(status="skipped", error=f"not requested: {skip}")
        elif error is not None:
            update.update(
                status="failed",
                error=error.message,
                attempts=j.attempts + error.attempts,
                cost_usd=error.cost_usd,
            )
            self._record_error("judgment", j.id, error.message)
        else:
            ab: ABResult = result
            raw = {"p_a": round(ab.p_a, 6), "p_b": round(ab.p_b, 6), "mass": round(ab.mass, 6)}
            update.update(
                attempts=j.attempts + ab.attempts,
                prompt_tokens=ab.prompt_tokens,
                completion_tokens=ab.completion_tokens,
                cost_usd=ab.cost_usd,
                latency_ms=ab.latency_ms,
                raw_answer=json.dumps(raw),
            )
            if ab.mass < judge.min_letter_mass:
                message = (
                    f"the judge put {ab.mass:.3f} of its probability on A or B "
                    f"(min_letter_mass {judge.min_letter_mass})"
                )
                update.update(status="failed", error=message)
                self._record_error("judgment", j.id, message)
            else:
                letter, confidence = confidence_from_ab(ab.p_a, ab.p_b)
                update.update(
                    status="succeeded",
                    winner=letter,
                    winner_generation_id=(
                        j.generation_a_id if letter == "A" else j.generation_b_id
                    ),
                    confidence=confidence,
                    reasoning=(
                        f"next-token probabilities A {ab.p_a:.3f}, B {ab.p_b:.3f} "
                        f"(letter mass {ab.mass:.3f})"
                    ),
                )
        update["finished_at"] = _now()
        for key, value in update.items():
            setattr(j, key, value)
        self._judgment_updates.append({"_id": j.id, **update})


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
        "finished_at": _now(),
    }


def _blank_judgment_result(j: JudgmentItem) -> dict[str, Any]:
    return {
        "status": j.status,
        "error": None,
        "attempts": j.attempts,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": Decimal(0),
        "latency_ms": None,
        "raw_answer": None,
        "winner": None,
        "winner_generation_id": None,
        "reasoning": None,
        "confidence": None,
        "finished_at": None,
    }


def _p_a(j: JudgmentItem) -> float:
    """The probability a probability judge gave to "A" (kept in its raw answer)."""
    return float(json.loads(j.raw_answer or "{}")["p_a"])


def _verdict(j: JudgmentItem) -> Verdict:
    assert j.winner_generation_id is not None and j.confidence is not None
    return Verdict(
        j.id,
        j.generation_a_id,
        j.generation_b_id,
        j.winner_generation_id,
        j.confidence,
        j.reasoning or "",
    )


async def run_job(job_id: int, settings: Settings) -> str:
    """Entry point for a worker: its own engine and provider pool for this run."""
    engine = make_engine(settings.database_url, pool_size=4)
    redis = Redis.from_url(settings.rate_limit_redis_url) if settings.rate_limit_redis_url else None
    try:
        pool = ProviderPool(
            settings.provider_configs(),
            redis=redis,
            local_options=settings.local_options(),
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
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as s:
            return await repo.recoverable_jobs(s, queued_for_s)
    finally:
        await engine.dispose()


async def orphaned_jobs(settings: Settings) -> list[int]:
    """Running jobs whose lease ran out (see workers' periodic sweep)."""
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as s:
            return await repo.orphaned_jobs(s)
    finally:
        await engine.dispose()
