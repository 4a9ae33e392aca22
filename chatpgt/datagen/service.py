"""Datagen jobs as the API sees them: create (idempotently), read with counts, list, cancel;
and their work (essays, judgments), read-only and keyset-paginated on id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen import repository as repo
from chatpgt.datagen.judges import needs_provider
from chatpgt.datagen.models import DatagenJob, Generation, Judgment
from chatpgt.datagen.schemas import (
    BatchView,
    DatagenJobCreate,
    DatagenJobView,
    EssayOut,
    EssayPage,
    FailureReason,
    JobStatus,
    JudgmentOut,
    JudgmentPage,
    StageCounts,
    TopicSelection,
    WorkStatus,
)
from chatpgt.datagen.summaries import JobOutcome
from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.errors import Conflict, InvalidInput, NotFound
from chatpgt.orchestration.status import DATAGEN_JOB, TERMINAL, RunStatus
from chatpgt.providers.keys import missing_keys
from chatpgt.settings import Settings
from chatpgt.topics import service as topics_service

MAX_GENERATIONS_PER_JOB = 200_000


def request_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def create_job(
    session: AsyncSession, settings: Settings, req: DatagenJobCreate, idempotency_key: str | None
) -> tuple[DatagenJobView, bool]:
    """Write a queued job; returns (job, created). The caller commits, then enqueues if created.

    The same ``idempotency_key`` with the same body returns the first job; with another body it is
    a Conflict. Unknown providers and unknown topic ids are InvalidInput; nothing is written then.
    """
    body = req.model_dump(mode="json")
    digest = request_hash(body)
    if idempotency_key is not None:
        existing = await repo.get_job_by_key(session, idempotency_key)
        if existing is not None:
            return await _replay(session, existing, digest), False

    check_providers(settings, req)
    topic_ids = await resolve_topic_ids(session, req.topics)
    per_topic = sum(g.samples_per_topic for g in req.generators)
    if per_topic * len(topic_ids) > MAX_GENERATIONS_PER_JOB:
        raise InvalidInput(
            f"{len(topic_ids)} topics x {per_topic} candidates exceeds "
            f"{MAX_GENERATIONS_PER_JOB} generations per job; split the job"
        )
    budget = Decimal(str(req.budget_usd)) if req.budget_usd is not None else None
    job_id = await repo.insert_job(
        session,
        request={**body, "topic_ids": topic_ids},
        request_hash=digest,
        idempotency_key=idempotency_key,
        budget_usd=budget,
    )
    if job_id is None:  # a concurrent request with the same key won the race
        assert idempotency_key is not None
        existing = await repo.get_job_by_key(session, idempotency_key)
        assert existing is not None
        return await _replay(session, existing, digest), False
    return await get_job_view(session, job_id), True


async def resolve_topic_ids(session: AsyncSession, topics: TopicSelection) -> list[int]:
    """The selection's topic ids (new titles are created); InvalidInput when it is empty."""
    topic_ids = await topics_service.resolve_topics(
        session, titles=topics.titles, ids=topics.ids, sample=topics.sample, seed=topics.seed
    )
    if not topic_ids:
        raise InvalidInput("the topic selection is empty: add topics first (POST /topics)")
    return topic_ids


def check_providers(settings: Settings, req: DatagenJobCreate) -> None:
    """InvalidInput when a generator's or the judge's provider is not configured, or has no
    key."""
    providers = settings.provider_configs()
    wanted = {g.provider for g in req.generators}
    if needs_provider(req.judge.method):  # a style_classifier judge asks no provider
        wanted.add(req.judge.provider)
    unknown = sorted(wanted - providers.keys())
    if unknown:
        raise InvalidInput(
            f"unknown provider(s): {', '.join(unknown)}; configured: {', '.join(sorted(providers))}"
        )
    keyless = missing_keys(providers, wanted)
    if keyless:
        raise InvalidInput("; ".join(keyless))
    judge = providers.get(req.judge.provider)
    batched = [(f"generator {g.provider}/{g.model}", g.provider) for g in req.generators]
    batched = [b for b, g in zip(batched, req.generators, strict=True) if g.mode == "batch"]
    if req.judge.mode == "batch":
        if req.judge.method != "json":
            raise InvalidInput(
                f"judge method {req.judge.method} cannot run in batch mode (only method json)"
            )
        batched.append((f"judge {req.judge.provider}/{req.judge.model}", req.judge.provider))
    for what, name in batched:
        cfg = providers[name]
        if cfg.kind not in ("openai", "anthropic") or not cfg.supports_batch:
            raise InvalidInput(
                f'{what}: "mode": "batch" needs a provider with a Batch API; provider '
                f"{name!r} (kind {cfg.kind}) has none"
                + ("" if cfg.kind == "local" else " (supports_batch is false)")
            )
    if req.judge.method == "ab_probability" and judge is not None and judge.kind == "anthropic":
        raise InvalidInput(
            f"judge method ab_probability reads token probabilities, which provider "
            f"{req.judge.provider!r} (kind anthropic) does not return; use method json"
        )


async def _replay(session: AsyncSession, job: DatagenJob, digest: str) -> DatagenJobView:
    if job.request_hash != digest:
        raise Conflict(
            "this Idempotency-Key was used for a different request body",
            job_id=job.id,
        )
    return (await _views(session, [job]))[0]


async def get_job_view(session: AsyncSession, job_id: int) -> DatagenJobView:
    job = await repo.get_job(session, job_id)
    return (await _views(session, [job]))[0]


async def list_job_views(
    session: AsyncSession, *, status: JobStatus | None, before_id: int | None, limit: int
) -> tuple[list[DatagenJobView], int | None]:
    jobs = await repo.list_jobs(session, status=status, before_id=before_id, limit=limit + 1)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return await _views(session, jobs), (jobs[-1].id if more and jobs else None)


async def cancel_job(session: AsyncSession, job_id: int) -> DatagenJobView:
    """Ask a job to stop. A queued job is cancelled at once; a running one stops within seconds,
    keeping what is done. Cancelling a finished job is an InvalidState (409)."""
    job = await repo.get_job(session, job_id, for_update=True)
    if job.status in TERMINAL:
        if job.status == "cancelled":
            return await get_job_view(session, job_id)
        DATAGEN_JOB.check(job.status, RunStatus.CANCELLED)
    await repo.request_cancel(session, job_id)
    if job.status == "queued":
        await repo.transition(session, job_id, "cancelled", stop_reason="cancelled")
        await repo.cancel_pending_items(session, job_id)
    await session.flush()
    session.expire_all()
    return await get_job_view(session, job_id)


def _stage(counts: dict[str, int]) -> StageCounts:
    return StageCounts(
        total=sum(counts.values()),
        done=counts.get("succeeded", 0),
        failed=counts.get("failed", 0),
        skipped=counts.get("skipped", 0),
        cancelled=counts.get("cancelled", 0),
        pending=counts.get("pending", 0) + counts.get("running", 0),
    )


async def _views(session: AsyncSession, jobs: list[DatagenJob]) -> list[DatagenJobView]:
    counts = await repo.job_counts(session, [j.id for j in jobs])
    batches: dict[int, list[BatchView]] = {}
    for b in await repo.job_batches(session, [j.id for j in jobs]):
        batches.setdefault(b.job_id, []).append(
            BatchView(
                id=b.id,
                provider=b.provider,
                status=b.status,
                remote_status=b.remote_status,
                remote_batch_id=b.remote_batch_id,
                remote_file_id=b.remote_file_id,
                requests=len(b.keys),
                counts=b.counts or {},
                error=b.error,
                created_at=b.created_at,
            )
        )
    views = []
    for job in jobs:
        c = counts[job.id]
        views.append(
            DatagenJobView(
                id=job.id,
                status=RunStatus(job.status),
                outcome=JobOutcome(job.outcome) if job.outcome else None,
                stop_reason=job.stop_reason,  # type: ignore[arg-type]
                error=job.error,
                failure_summary=[FailureReason(**r) for r in job.failure_summary or []],
                created_at=job.created_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                topics=c["topics"] or len(job.request.get("topic_ids", [])),
                generations=_stage(c["generations"]),
                judgments=_stage(c["judgments"]),
                pairs=c["pairs"],
                ties=c["ties"],
                near_duplicates=c.get("near_duplicates", {}),
                prompt_tokens=c["prompt_tokens"],
                completion_tokens=c["completion_tokens"],
                cost_usd=float(c["cost_usd"]),
                cache_hits=c["cache_hits"],
                saved_usd=float(c["saved_usd"]),
                budget_usd=float(job.budget_usd) if job.budget_usd is not None else None,
                batches=batches.get(job.id, []),
                errors=job.errors,
                request=job.request,
            )
        )
    return views


# --- the work of jobs ------------------------------------------------------------------------


async def list_essays(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    job_id: int | None = None,
    topic_id: int | None = None,
    status: WorkStatus | None = None,
    model: str | None = None,
) -> EssayPage:
    """One page of essays in id order. Raises InvalidInput for a cursor this API did not issue."""
    items, next_cursor = await _work_page(
        session, Generation, EssayOut, limit, cursor, job_id, topic_id, status, model
    )
    return EssayPage(items=items, next_cursor=next_cursor)


async def get_essay(session: AsyncSession, essay_id: int) -> EssayOut:
    """One essay; raises NotFound."""
    return await _work_item(session, Generation, EssayOut, essay_id, "essay")


async def list_judgments(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None = None,
    job_id: int | None = None,
    topic_id: int | None = None,
    status: WorkStatus | None = None,
) -> JudgmentPage:
    """One page of judgments in id order. Raises InvalidInput for a cursor this API did not
    issue."""
    items, next_cursor = await _work_page(
        session, Judgment, JudgmentOut, limit, cursor, job_id, topic_id, status, None
    )
    return JudgmentPage(items=items, next_cursor=next_cursor)


async def get_judgment(session: AsyncSession, judgment_id: int) -> JudgmentOut:
    """One judgment; raises NotFound."""
    return await _work_item(session, Judgment, JudgmentOut, judgment_id, "judgment")


_Out = TypeVar("_Out", EssayOut, JudgmentOut)


async def _work_page(
    session: AsyncSession,
    model: repo.WorkModel,
    schema: type[_Out],
    limit: int,
    cursor: str | None,
    job_id: int | None,
    topic_id: int | None,
    status: WorkStatus | None,
    model_name: str | None,
) -> tuple[list[_Out], str | None]:
    rows = await repo.work_page(
        session,
        model,
        list(schema.model_fields),
        after_id=decode_cursor(cursor),
        limit=limit + 1,
        job_id=job_id,
        topic_id=topic_id,
        status=status,
        model_name=model_name,
    )
    items = [schema.model_validate(row._mapping) for row in rows[:limit]]
    more = len(rows) > limit
    return items, encode_cursor(items[-1].id) if more else None


async def _work_item(
    session: AsyncSession, model: repo.WorkModel, schema: type[_Out], item_id: int, what: str
) -> _Out:
    row = await repo.work_item(session, model, list(schema.model_fields), item_id)
    if row is None:
        raise NotFound(f"No {what} with id {item_id}.", **{f"{what}_id": item_id})
    return schema.model_validate(row._mapping)


async def judge_flip_counts(session: AsyncSession, job_ids: Sequence[int] = ()) -> tuple[int, int]:
    """``(matchups, flips)`` over the given jobs (all jobs when empty): matchups whose two
    orders both succeeded, and those where the two verdicts named different winners."""
    per_job = await repo.flip_counts(session, job_ids)
    return sum(m for m, _ in per_job.values()), sum(f for _, f in per_job.values())
