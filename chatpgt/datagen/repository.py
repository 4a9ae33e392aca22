"""All SQL of datagen jobs, their topics, generations, judgments, and the pairs they make.

Functions flush; the caller's unit of work commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    Row,
    String,
    Table,
    Text,
    bindparam,
    case,
    column,
    distinct,
    func,
    select,
    table,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.models import (
    BatchResult,
    CachedResponse,
    DatagenJob,
    Generation,
    JobTopic,
    Judgment,
    ProviderBatch,
)
from chatpgt.db.base import utcnow
from chatpgt.db.helpers import dialect_insert, insert_ignore, insert_one_ignore
from chatpgt.errors import NotFound
from chatpgt.orchestration import leases
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.status import DATAGEN_JOB, ITEM_TERMINAL, ItemStatus, RunStatus
from chatpgt.pairs.models import NearDuplicate, Pair
from chatpgt.topics.models import Topic

# --- jobs -------------------------------------------------------------------------------------


async def insert_job(
    session: AsyncSession,
    *,
    request: dict[str, Any],
    request_hash: str,
    idempotency_key: str | None,
    budget_usd: Decimal | None,
) -> int | None:
    """Insert a queued job and return its id; None when the idempotency key is already taken."""
    return await insert_one_ignore(
        session,
        DatagenJob,
        {
            "status": RunStatus.QUEUED.value,
            "request": request,
            "request_hash": request_hash,
            "idempotency_key": idempotency_key,
            "budget_usd": budget_usd,
            "cancel_requested": False,
            "errors": [],
            "attempts": 0,
            "updated_at": utcnow(),
        },
    )


async def get_job_by_key(session: AsyncSession, key: str) -> DatagenJob | None:
    return (
        await session.execute(select(DatagenJob).where(DatagenJob.idempotency_key == key))
    ).scalar_one_or_none()


async def get_job(session: AsyncSession, job_id: int, *, for_update: bool = False) -> DatagenJob:
    stmt = select(DatagenJob).where(DatagenJob.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    job = (await session.execute(stmt)).scalar_one_or_none()
    if job is None:
        raise NotFound(f"datagen job {job_id} does not exist")
    return job


async def list_jobs(
    session: AsyncSession, *, status: str | None, before_id: int | None, limit: int
) -> list[DatagenJob]:
    """Newest first, keyset on id."""
    stmt = select(DatagenJob).order_by(DatagenJob.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(DatagenJob.status == status)
    if before_id is not None:
        stmt = stmt.where(DatagenJob.id < before_id)
    return list((await session.execute(stmt)).scalars())


async def transition(
    session: AsyncSession, job_id: int, target: str, *, owner: str | None = None, **fields: Any
) -> bool:
    """Move a job to ``target`` if its current state allows it (and ``owner`` holds its lease).

    The one way a job's status changes (chatpgt.orchestration.leases.transition with the
    datagen job's lifecycle). Returns False when the job was not in an allowed state.
    """
    return await leases.transition(
        session, DatagenJob, DATAGEN_JOB, job_id, target, owner=owner, **fields
    )


async def claim(session: AsyncSession, job_id: int, owner: str, lease_s: float) -> str:
    """Take the job's lease: "claimed", "busy" (another live owner) or the terminal status."""
    outcome = await leased.claim(session, DatagenJob, DATAGEN_JOB, job_id, owner, lease_s)
    if outcome == "missing":
        raise NotFound(f"datagen job {job_id} does not exist")
    return outcome


async def renew_lease(
    session: AsyncSession, job_id: int, owner: str, lease_s: float
) -> tuple[bool, bool]:
    """Extend the lease. Returns (still ours, cancel requested)."""
    row = (await session.execute(leases.renew_stmt(DatagenJob, job_id, owner, lease_s))).first()
    return (row is not None, bool(row.cancel_requested) if row else False)


async def release_lease(session: AsyncSession, job_id: int, owner: str) -> None:
    await session.execute(leases.release_stmt(DatagenJob, job_id, owner))


async def request_cancel(session: AsyncSession, job_id: int) -> None:
    await session.execute(
        update(DatagenJob)
        .where(DatagenJob.id == job_id)
        .values(cancel_requested=True, updated_at=utcnow())
    )


async def append_errors(
    session: AsyncSession, job_id: int, errors: Sequence[dict[str, Any]], keep: int
) -> None:
    """Keep the first ``keep`` item errors on the job row."""
    if not errors:
        return
    job = await get_job(session, job_id, for_update=True)
    if len(job.errors) < keep:
        job.errors = [*job.errors, *errors][:keep]
    await session.flush()


async def recoverable_jobs(session: AsyncSession, queued_for_s: float) -> list[tuple[int, float]]:
    """Jobs to (re-)enqueue, with the seconds until each one's lease runs out (0 when free):
    every running job, and queued jobs older than ``queued_for_s`` (whose message may be lost)."""
    at = utcnow()
    rows = (await session.execute(leases.recoverable_stmt(DatagenJob, queued_for_s))).all()
    return [(job_id, leases.wait_until_free(expires, at)) for job_id, expires in rows]


async def orphaned_jobs(session: AsyncSession) -> list[int]:
    """Running jobs whose lease has run out: their worker died (or lost the database for longer
    than the lease) and nobody has taken them over."""
    return list((await session.scalars(leases.orphans_stmt(DatagenJob))).all())


async def job_counts(session: AsyncSession, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per-stage counts, tokens, cost, pairs and ties of each job, from the rows themselves."""
    out: dict[int, dict[str, Any]] = {
        j: {
            "generations": {},
            "judgments": {},
            "pairs": 0,
            "ties": 0,
            "topics": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": Decimal(0),
            "cache_hits": 0,
            "saved_usd": Decimal(0),
        }
        for j in job_ids
    }
    if not job_ids:
        return out
    for model, key in ((Generation, "generations"), (Judgment, "judgments")):
        rows = await session.execute(
            select(
                model.job_id,
                model.status,
                func.count(),
                func.coalesce(func.sum(model.prompt_tokens), 0),
                func.coalesce(func.sum(model.completion_tokens), 0),
                func.coalesce(func.sum(model.cost_usd), 0),
                func.count().filter(model.cache_hit),
                func.coalesce(func.sum(model.saved_usd), 0),
            )
            .where(model.job_id.in_(job_ids))
            .group_by(model.job_id, model.status)
        )
        for job_id, status, n, pt, ct, cost, hits, saved in rows:
            c = out[job_id]
            c[key][status] = int(n)
            c["prompt_tokens"] += int(pt)
            c["completion_tokens"] += int(ct)
            c["cost_usd"] += Decimal(cost)
            c["cache_hits"] += int(hits)
            c["saved_usd"] += Decimal(saved)
    for job_id, n in await session.execute(
        select(Pair.job_id, func.count()).where(Pair.job_id.in_(job_ids)).group_by(Pair.job_id)
    ):
        out[job_id]["pairs"] = int(n)
    for job_id, n in await session.execute(
        select(JobTopic.job_id, func.count())
        .where(JobTopic.job_id.in_(job_ids))
        .group_by(JobTopic.job_id)
    ):
        out[job_id]["topics"] = int(n)
    for job_id, (_, flips) in (await flip_counts(session, job_ids)).items():
        out[job_id]["ties"] = flips
    for job_id, kind, n in await session.execute(
        select(NearDuplicate.job_id, NearDuplicate.kind, func.count())
        .where(NearDuplicate.job_id.in_(job_ids))
        .group_by(NearDuplicate.job_id, NearDuplicate.kind)
    ):
        out[job_id].setdefault("near_duplicates", {})[kind] = int(n)
    return out


async def flip_counts(
    session: AsyncSession, job_ids: Sequence[int] = ()
) -> dict[int, tuple[int, int]]:
    """Per job: (matchups whose two orders both succeeded, those whose verdicts disagree).

    One scan grouped by unordered matchup (no self-join, so it stays linear in the rows).
    All jobs when ``job_ids`` is empty.
    """
    j = Judgment
    low = case((j.generation_a_id < j.generation_b_id, j.generation_a_id), else_=j.generation_b_id)
    high = case((j.generation_a_id < j.generation_b_id, j.generation_b_id), else_=j.generation_a_id)
    inner = (
        select(
            j.job_id.label("job_id"),
            func.count().label("verdicts"),
            func.count(distinct(j.winner_generation_id)).label("winners"),
        )
        .where(j.status == "succeeded")
        .group_by(j.job_id, low, high)
    )
    if job_ids:
        inner = inner.where(j.job_id.in_(job_ids))
    m = inner.subquery()
    stmt = (
        select(m.c.job_id, func.count(), func.count().filter(m.c.winners > 1))
        .where(m.c.verdicts == 2)
        .group_by(m.c.job_id)
    )
    return {job_id: (int(n), int(f)) for job_id, n, f in await session.execute(stmt)}


async def registered_model_paths(session: AsyncSession, names: Sequence[str]) -> dict[str, str]:
    """``{name: path}`` of the trained models in the registry with these names."""
    if not names:
        return {}
    rows = await session.execute(
        select(_MODELS.c.name, _MODELS.c.path).where(_MODELS.c.name.in_(names))
    )
    return {name: path for name, path in rows}


# The registry's table (chatpgt.training.models.RegisteredModel), named by its columns: its model
# lives a floor above datagen, which only reads a name's path.
_MODELS = table("models", column("name", String), column("path", Text))


# --- plan and work items ---------------------------------------------------------------------


async def insert_job_topics(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await insert_ignore(session, JobTopic, rows)


async def load_job_topics(session: AsyncSession, job_id: int) -> list[tuple[JobTopic, Topic]]:
    rows = await session.execute(
        select(JobTopic, Topic)
        .join(Topic, Topic.id == JobTopic.topic_id)
        .where(JobTopic.job_id == job_id)
        .order_by(JobTopic.topic_id)
    )
    return [(jt, t) for jt, t in rows]


async def load_topics(session: AsyncSession, topic_ids: Sequence[int]) -> list[Topic]:
    rows = await session.execute(select(Topic).where(Topic.id.in_(topic_ids)))
    return list(rows.scalars())


async def insert_generations(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await insert_ignore(session, Generation, rows)


async def load_generations(session: AsyncSession, job_id: int) -> list[Generation]:
    rows = await session.execute(
        select(Generation).where(Generation.job_id == job_id).order_by(Generation.id)
    )
    return list(rows.scalars())


JUDGMENT_PLAN_COLUMNS = (
    "id",
    "topic_id",
    "generation_a_id",
    "generation_b_id",
    "status",
    "attempts",
    "winner",
    "winner_generation_id",
    "confidence",
    "reasoning",
    "raw_answer",
    "cost_usd",
)


async def plan_judgments(
    session: AsyncSession, job_id: int, rows_by_topic: Mapping[int, Sequence[dict[str, Any]]]
) -> dict[int, list[Any]]:
    """Insert the judgments of several topics (existing rows are kept) in one statement and
    return every judgment row of those topics (JUDGMENT_PLAN_COLUMNS), by topic."""
    table = Judgment.__table__
    cols = [table.c[name] for name in JUDGMENT_PLAN_COLUMNS]
    rows = [r for topic_rows in rows_by_topic.values() for r in topic_rows]
    out: dict[int, list[Any]] = {t: [] for t in rows_by_topic}
    if rows:
        stmt = dialect_insert(session)(table).on_conflict_do_nothing().returning(*cols)
        for row in await session.execute(stmt, rows):
            out[row.topic_id].append(row)
    partial = [t for t, topic_rows in rows_by_topic.items() if len(out[t]) < len(topic_rows)]
    if partial:  # planned before (a resumed run): read what is there
        for t in partial:
            out[t] = []
        existing = await session.execute(
            select(*cols).where(table.c.job_id == job_id, table.c.topic_id.in_(partial))
        )
        for row in existing:
            out[row.topic_id].append(row)
    return out


async def load_judgments(
    session: AsyncSession, job_id: int, topic_id: int | None = None
) -> list[Judgment]:
    stmt = select(Judgment).where(Judgment.job_id == job_id).order_by(Judgment.id)
    if topic_id is not None:
        stmt = stmt.where(Judgment.topic_id == topic_id)
    return list((await session.execute(stmt)).scalars())


GENERATION_RESULT_COLUMNS = (
    "status",
    "error",
    "text",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "finish_reason",
    "finished_at",
    "cache_hit",
    "saved_usd",
)
JUDGMENT_RESULT_COLUMNS = (
    "status",
    "error",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "raw_answer",
    "winner",
    "winner_generation_id",
    "reasoning",
    "confidence",
    "finished_at",
    "cache_hit",
    "saved_usd",
)


def _update_by_id(model: type[Generation] | type[Judgment], columns: Sequence[str]) -> Any:
    table = cast(Table, model.__table__)
    return (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({c: bindparam(c) for c in columns})
    )


_UPDATE_GENERATION = _update_by_id(Generation, GENERATION_RESULT_COLUMNS)
_UPDATE_JUDGMENT = _update_by_id(Judgment, JUDGMENT_RESULT_COLUMNS)


async def update_generations(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Write results by id: each dict has ``_id`` and every GENERATION_RESULT_COLUMNS key.

    One executemany of a Core statement: the cheapest way to write a batch of results.
    """
    if rows:
        await session.execute(_UPDATE_GENERATION, list(rows))


async def update_judgments(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Like update_generations, with JUDGMENT_RESULT_COLUMNS."""
    if rows:
        await session.execute(_UPDATE_JUDGMENT, list(rows))


async def mark_topics_done(session: AsyncSession, job_id: int, topic_ids: Sequence[int]) -> None:
    if topic_ids:
        await session.execute(
            update(JobTopic)
            .where(JobTopic.job_id == job_id, JobTopic.topic_id.in_(topic_ids))
            .values(stage="done")
        )


async def close_orphans(session: AsyncSession, job_id: int, reason: str) -> None:
    """Mark items a finished job left unfinished as skipped (e.g. judgments planned for an essay
    whose generation later failed on a resumed run)."""
    for model in (Generation, Judgment):
        await session.execute(
            update(model)
            .where(model.job_id == job_id, model.status.not_in(ITEM_TERMINAL))
            .values(status="skipped", error=reason, finished_at=utcnow())
        )


async def cancel_pending_items(
    session: AsyncSession, job_id: int, reason: str = "job cancelled"
) -> None:
    """Mark every unfinished item of a job cancelled (its requests will not be made)."""
    for model in (Generation, Judgment):
        await session.execute(
            update(model)
            .where(model.job_id == job_id, model.status.not_in(ITEM_TERMINAL))
            .values(status=ItemStatus.CANCELLED.value, error=reason, finished_at=utcnow())
        )


async def failure_summary(
    session: AsyncSession, job_id: int, limit: int = 5
) -> list[dict[str, Any]]:
    """The most common reasons the job's items failed: ``{stage, provider, model, reason,
    count}``, most frequent first."""
    out: list[dict[str, Any]] = []
    for stage, model, provider, name in (
        ("generation", Generation, Generation.provider, Generation.model),
        ("judgment", Judgment, Judgment.judge_provider, Judgment.judge_model),
    ):
        rows = await session.execute(
            select(provider, name, model.error, func.count())
            .where(model.job_id == job_id, model.status == ItemStatus.FAILED.value)
            .group_by(provider, name, model.error)
        )
        out += [
            {"stage": stage, "provider": p, "model": m, "reason": (e or "")[:500], "count": n}
            for p, m, e, n in rows
        ]
    out.sort(key=lambda r: (-r["count"], r["stage"], r["reason"], r["provider"], r["model"]))
    return out[:limit]


async def insert_pairs(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await insert_ignore(session, Pair, rows)


async def upsert_near_duplicates(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Flag essays as near-duplicates; a flag already there (a replayed batch) is replaced."""
    if not rows:
        return
    stmt = dialect_insert(session)(NearDuplicate)
    columns = ("kind", "similar_generation_id", "similar_topic_id", "similarity", "scanned_at")
    stmt = stmt.on_conflict_do_update(
        index_elements=[NearDuplicate.generation_id],
        set_={c: getattr(stmt.excluded, c) for c in columns},
    )
    await session.execute(stmt, list(rows))


# --- the response cache (chatpgt.datagen.cache) --------------------------------------------


async def cached_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """Which of these keys the response cache holds."""
    if not keys:
        return set()
    rows = await session.scalars(select(CachedResponse.key).where(CachedResponse.key.in_(keys)))
    return set(rows)


async def cached_responses(session: AsyncSession, keys: Sequence[str]) -> dict[str, Row[Any]]:
    """The cached answers under these keys (text, finish_reason, cost_usd, logprobs), by key."""
    if not keys:
        return {}
    stmt = select(
        CachedResponse.key,
        CachedResponse.text,
        CachedResponse.finish_reason,
        CachedResponse.cost_usd,
        CachedResponse.logprobs,
    ).where(CachedResponse.key.in_(keys))
    return {row.key: row for row in await session.execute(stmt)}


async def insert_cached_responses(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Keep new answers; a key already there (another job bought it too) keeps the first."""
    if rows:
        now = utcnow()
        await insert_ignore(session, CachedResponse, [{**r, "created_at": now} for r in rows])


# --- a job's remote batches (chatpgt.datagen.batches) ----------------------------------------

BATCH_CLOSED = ("done", "abandoned")


async def open_batches(session: AsyncSession, job_id: int) -> list[ProviderBatch]:
    """The job's batches not yet done (submitting, or waiting at the provider)."""
    stmt = (
        select(ProviderBatch)
        .where(ProviderBatch.job_id == job_id, ProviderBatch.status.not_in(BATCH_CLOSED))
        .order_by(ProviderBatch.id)
    )
    return list((await session.scalars(stmt)).all())


async def job_batches(session: AsyncSession, job_ids: Sequence[int]) -> list[ProviderBatch]:
    stmt = (
        select(ProviderBatch)
        .where(ProviderBatch.job_id.in_(job_ids))
        .order_by(ProviderBatch.job_id, ProviderBatch.id)
    )
    return list((await session.scalars(stmt)).all())


async def insert_batch(session: AsyncSession, values: dict[str, Any]) -> int:
    row = ProviderBatch(**values, counts={}, updated_at=utcnow())
    session.add(row)
    await session.flush()
    return row.id


async def update_batch(session: AsyncSession, batch_id: int, **values: Any) -> None:
    await session.execute(
        update(ProviderBatch)
        .where(ProviderBatch.id == batch_id)
        .values(**values, updated_at=utcnow())
    )


async def insert_batch_results(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await insert_ignore(session, BatchResult, rows)


async def batch_results(session: AsyncSession, job_id: int) -> list[BatchResult]:
    """Every stored answer and error of the job's batches, oldest batch first."""
    stmt = (
        select(BatchResult)
        .join(ProviderBatch, ProviderBatch.id == BatchResult.batch_id)
        .where(ProviderBatch.job_id == job_id)
        .order_by(BatchResult.batch_id)
    )
    return list((await session.execute(stmt)).scalars().all())


async def park_job(session: AsyncSession, job_id: int, owner: str, until_s: float) -> bool:
    """Give the worker back while the job waits on its batches: the lease is released but
    held free of takers for ``until_s`` seconds, after which the sweep (or the task's own
    retry) brings the job back to look again."""
    at = utcnow()
    result = await session.execute(
        update(DatagenJob)
        .where(DatagenJob.id == job_id, DatagenJob.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=at + timedelta(seconds=until_s), updated_at=at)
        .returning(DatagenJob.id)
    )
    return result.first() is not None


# --- reading the work of jobs (GET /essays, GET /judgments) ----------------------------------

WorkModel = type[Generation] | type[Judgment]
_MONEY = frozenset({"cost_usd", "saved_usd"})


def _work_columns(model: WorkModel, names: Sequence[str]) -> list[ColumnElement[Any]]:
    columns: list[ColumnElement[Any]] = []
    for name in names:
        column = getattr(model, name)
        # Money is NUMERIC; the API shows a float, like every other figure.
        columns.append(sql_cast(column, Float).label(name) if name in _MONEY else column)
    return columns


async def work_page(
    session: AsyncSession,
    model: WorkModel,
    names: Sequence[str],
    *,
    after_id: int | None,
    limit: int,
    job_id: int | None = None,
    topic_id: int | None = None,
    status: str | None = None,
    model_name: str | None = None,
) -> list[Row[Any]]:
    """Up to ``limit`` generation or judgment rows (the columns ``names``) in id order after
    ``after_id``, filtered by job, topic, status and (generations) model."""
    stmt = select(*_work_columns(model, names)).order_by(model.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(model.id > after_id)
    if job_id is not None:
        stmt = stmt.where(model.job_id == job_id)
    if topic_id is not None:
        stmt = stmt.where(model.topic_id == topic_id)
    if status:
        stmt = stmt.where(model.status == status)
    if model_name and model is Generation:
        stmt = stmt.where(Generation.model == model_name)
    return list((await session.execute(stmt)).all())


async def work_item(
    session: AsyncSession, model: WorkModel, names: Sequence[str], item_id: int
) -> Row[Any] | None:
    stmt = select(*_work_columns(model, names)).where(model.id == item_id)
    return (await session.execute(stmt)).first()


# --- what the style-classifier judge trains on -------------------------------------------------


async def job_of_judgment(session: AsyncSession, judgment_id: int) -> int | None:
    return cast(
        "int | None",
        await session.scalar(select(Judgment.job_id).where(Judgment.id == judgment_id)),
    )


async def corpus_essays(session: AsyncSession) -> list[tuple[str, str]]:
    """(title, text) of every corpus topic that carries its essay, by id."""
    rows = await session.execute(
        select(Topic.title, Topic.reference_text)
        .where(Topic.source == "corpus", Topic.reference_text.is_not(None))
        .order_by(Topic.id)
    )
    return [(title, text) for title, text in rows.all() if text and text.strip()]


async def other_jobs_essays(session: AsyncSession, job_id: int, limit: int) -> list[str]:
    """Succeeded candidate essays of jobs other than ``job_id`` (other writers), by id."""
    rows = await session.scalars(
        select(Generation.text)
        .where(
            Generation.job_id != job_id,
            Generation.status == ItemStatus.SUCCEEDED,
            Generation.text.is_not(None),
        )
        .order_by(Generation.id)
        .limit(limit)
    )
    return [t for t in rows.all() if t and t.strip()]
