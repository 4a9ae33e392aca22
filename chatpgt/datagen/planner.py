"""Planning a job's work: its topics' prompts and generation rows once (idempotent, so a resumed
run plans nothing new), then judgment rows topic by topic as their essays come in, several
topics in one statement."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository as repo
from chatpgt.datagen.budget import Budget
from chatpgt.datagen.flusher import Fence
from chatpgt.datagen.judges import JudgmentItem
from chatpgt.datagen.models import Generation
from chatpgt.datagen.pairing import matchups
from chatpgt.datagen.prompts import (
    DEFAULT_PROMPT_TEMPLATES,
    DEFAULT_SYSTEM_PROMPT,
    choose_template,
    render_prompt,
)
from chatpgt.datagen.schemas import DatagenJobCreate
from chatpgt.db.session import transaction
from chatpgt.orchestration.leases import LeaseLost
from chatpgt.orchestration.retry import until_reachable
from chatpgt.orchestration.status import ItemStatus

log = logging.getLogger(__name__)

_CHUNK = 1000


@dataclass
class TopicState:
    topic_id: int
    title: str
    prompt: str
    reference_text: str | None
    stage: str
    generations: list[Generation] = field(default_factory=list)


@dataclass(frozen=True)
class JobPlan:
    """What the runner needs to know of a planned job."""

    req: DatagenJobCreate
    budget: Budget
    # Trained models of the registry a local provider runs from their directory: {name: path}.
    model_paths: dict[str, str]


def _zero_work() -> dict[str, Any]:
    return {
        "status": ItemStatus.PENDING.value,
        "attempts": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": Decimal(0),
    }


async def plan_job(
    sm: async_sessionmaker[AsyncSession], job_id: int, local_providers: set[str]
) -> JobPlan:
    """Insert the job's topic prompts and generation rows; a no-op when already planned."""
    async with transaction(sm) as s:
        job = await repo.get_job(s, job_id)
        req = DatagenJobCreate.model_validate(
            {k: v for k, v in job.request.items() if k != "topic_ids"}
        )
        # A local provider may name a trained model from the registry (on-policy candidates
        # or judge): it runs from the model's directory.
        wanted = {g.model for g in req.generators if g.provider in local_providers}
        if req.judge.provider in local_providers:
            wanted.add(req.judge.model)
        model_paths = await repo.registered_model_paths(s, sorted(wanted))
        templates = req.prompt_templates or list(DEFAULT_PROMPT_TEMPLATES)
        jt_rows = []
        for topic in await repo.load_topics(s, job.request["topic_ids"]):
            # With the cache on, the same job body must make the same requests (a resubmitted
            # job is answered from the cache); off, each job draws its own templates.
            index = choose_template(None if req.cache else job_id, topic.id, templates)
            jt_rows.append(
                {
                    "job_id": job_id,
                    "topic_id": topic.id,
                    "template_index": index,
                    "prompt": render_prompt(templates[index], topic.title),
                    "stage": "generating",
                }
            )
        for i in range(0, len(jt_rows), _CHUNK):
            await repo.insert_job_topics(s, jt_rows[i : i + _CHUNK])
        system = req.system_prompt if req.system_prompt is not None else DEFAULT_SYSTEM_PROMPT
        rows = []
        for jt, _topic in await repo.load_job_topics(s, job_id):
            for gen in req.generators:
                for sample in range(gen.samples_per_topic):
                    rows.append(
                        {
                            "job_id": job_id,
                            "topic_id": jt.topic_id,
                            "generator_key": gen.key,
                            "provider": gen.provider,
                            "model": gen.model,
                            "params": gen.params(),
                            "sample_index": sample,
                            "system_prompt": system,
                            "prompt": jt.prompt,
                            **_zero_work(),
                        }
                    )
        for i in range(0, len(rows), _CHUNK):
            await repo.insert_generations(s, rows[i : i + _CHUNK])
        return JobPlan(req, Budget(job.budget_usd, Decimal(0)), model_paths)


async def load_work(
    sm: async_sessionmaker[AsyncSession], job_id: int
) -> tuple[list[TopicState], Decimal]:
    """The job's topics with their generations, and what the job has spent so far."""
    async with transaction(sm) as s:
        topics = {
            jt.topic_id: TopicState(jt.topic_id, t.title, jt.prompt, t.reference_text, jt.stage)
            for jt, t in await repo.load_job_topics(s, job_id)
        }
        spent = Decimal(0)
        for g in await repo.load_generations(s, job_id):
            topics[g.topic_id].generations.append(g)
            spent += g.cost_usd
        for j in await repo.load_judgments(s, job_id):
            spent += j.cost_usd
        s.expunge_all()
    return list(topics.values()), spent


def judgment_rows(
    job_id: int,
    topic_id: int,
    candidates: list[int],
    *,
    provider: str,
    model: str,
    both_orders: bool,
) -> list[dict[str, Any]]:
    """One judgment row per matchup of ``candidates`` and order (both when ``both_orders``)."""
    rows = []
    for low, high in matchups(candidates):
        for a, b in [(low, high), (high, low)] if both_orders else [(low, high)]:
            rows.append(
                {
                    "job_id": job_id,
                    "topic_id": topic_id,
                    "generation_a_id": a,
                    "generation_b_id": b,
                    "judge_provider": provider,
                    "judge_model": model,
                    **_zero_work(),
                }
            )
    return rows


_Waiting = tuple[int, list[dict[str, Any]], "asyncio.Future[list[Any]]"]


class JudgmentPlanner:
    """Inserts the judgment rows of all topics that became ready since its last round at once,
    fenced by the lease like a flush (a runner that lost the job plans nothing more)."""

    def __init__(
        self,
        job_id: int,
        sm: async_sessionmaker[AsyncSession],
        fence: Fence,
        *,
        interval_s: float,
    ) -> None:
        self.job_id, self.sm, self.fence, self.interval_s = job_id, sm, fence, interval_s
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()

    async def plan(self, topic_id: int, rows: list[dict[str, Any]]) -> list[JudgmentItem]:
        """Every judgment row of the topic (existing rows are kept, on a resumed run)."""
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((topic_id, rows, fut))
        self._wake.set()
        names = repo.JUDGMENT_PLAN_COLUMNS
        # zip over the row's values: Row._mapping built a mapping object per row (~7 % of a
        # job's CPU in a profile at 1,000 in flight).
        return [JudgmentItem(**dict(zip(names, row, strict=True))) for row in await fut]

    async def loop(self, on_lease_lost: Any) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.interval_s)  # let more topics join
            self._wake.clear()
            batch, self._waiting = self._waiting, []
            try:
                # Planning is an INSERT ... ON CONFLICT DO NOTHING and a read: safe to replay.
                planned = await until_reachable(
                    functools.partial(self._plan_batch, batch),
                    label=f"job {self.job_id}",
                    what="plan judgments",
                    first_delay_s=self.interval_s,
                )
            except Exception as exc:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, LeaseLost):
                    log.warning("job %s: lease lost; judgments left unplanned", self.job_id)
                    on_lease_lost()
                    return
                continue
            for topic_id, _, fut in batch:
                if not fut.done():
                    fut.set_result(planned[topic_id])

    async def _plan_batch(self, batch: list[_Waiting]) -> dict[int, list[Any]]:
        async with transaction(self.sm) as s:
            await self.fence(s)
            return await repo.plan_judgments(
                s, self.job_id, {topic_id: rows for topic_id, rows, _ in batch}
            )
