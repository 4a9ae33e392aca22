"""All SQL of training: runs and the model registry.

Two doors onto the same statements: async functions for the API (an ``AsyncSession``; they
``flush()``, the request commits), and :class:`RunStore` for the worker, whose training loop and
heartbeat thread are synchronous (a sync engine, psycopg or sqlite3; every method is its own
transaction). Times are this process's UTC clock, bound as parameters, on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chatpgt.db.base import UTCDateTime, utcnow
from chatpgt.db.helpers import insert_for
from chatpgt.orchestration import leases
from chatpgt.orchestration.status import TRAINING_RUN, RunStatus
from chatpgt.pairs.models import Pair
from chatpgt.pairs.repository import PairFilters, select_pairs
from chatpgt.training.models import RegisteredModel, TrainingRun

# --------------------------------------------------------------------------------------------
# API side (async)


async def create_run(
    session: AsyncSession,
    *,
    kind: str,
    request: dict[str, Any],
    start_model: dict[str, Any],
    output_name: str | None,
) -> TrainingRun:
    """Insert a queued run. Without ``output_name`` the result is registered as ``<kind>-<id>``."""
    run = TrainingRun(
        kind=kind,
        status=RunStatus.QUEUED,
        request=request,
        start_model=start_model,
        output_name=output_name or "",
        progress={},
        metrics={},
        data_report={},
        artifacts={},
        samples=[],
    )
    session.add(run)
    await session.flush()
    if not output_name:
        run.output_name = f"{kind}-{run.id}"
        await session.flush()
    return run


async def get_run(session: AsyncSession, run_id: int) -> TrainingRun | None:
    return await session.get(TrainingRun, run_id, populate_existing=True)


async def list_runs(
    session: AsyncSession,
    *,
    limit: int,
    before: int | None = None,
    kind: str | None = None,
    status: str | None = None,
) -> Sequence[TrainingRun]:
    """Newest first, keyset on the id: the next page is ``before=<last id>``."""
    stmt = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(TrainingRun.id < before)
    if kind:
        stmt = stmt.where(TrainingRun.kind == kind)
    if status:
        stmt = stmt.where(TrainingRun.status == status)
    return (await session.scalars(stmt)).all()


async def request_cancel(session: AsyncSession, run_id: int) -> bool:
    """Flag a running run; its worker stops at the next step. False when it is not running."""
    stmt = leases.request_cancel_stmt(TrainingRun, run_id)
    return (await session.execute(stmt)).first() is not None


async def count_pairs(session: AsyncSession, filters: PairFilters) -> int:
    """How many pairs a DPO run with this selection would train on."""
    stmt = select(func.count()).select_from(select_pairs(filters).order_by(None).subquery())
    return int((await session.execute(stmt)).scalar_one())


async def get_model(session: AsyncSession, model_id: int) -> RegisteredModel | None:
    return await session.get(RegisteredModel, model_id)


async def get_model_by_name(session: AsyncSession, name: str) -> RegisteredModel | None:
    return await session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))


async def get_model_by_run(session: AsyncSession, run_id: int) -> RegisteredModel | None:
    return await session.scalar(select(RegisteredModel).where(RegisteredModel.run_id == run_id))


async def model_ids_by_run(session: AsyncSession, run_ids: Sequence[int]) -> dict[int, int]:
    if not run_ids:
        return {}
    rows = await session.execute(
        select(RegisteredModel.run_id, RegisteredModel.id).where(
            RegisteredModel.run_id.in_(run_ids)
        )
    )
    return {int(run_id): int(model_id) for run_id, model_id in rows.all() if run_id is not None}


async def list_models(
    session: AsyncSession, *, limit: int, after: int | None = None
) -> Sequence[RegisteredModel]:
    """Oldest first, keyset on the id: the next page is ``after=<last id>``."""
    stmt = select(RegisteredModel).order_by(RegisteredModel.id).limit(limit)
    if after is not None:
        stmt = stmt.where(RegisteredModel.id > after)
    return (await session.scalars(stmt)).all()


async def lineages(
    session: AsyncSession, model_ids: Sequence[int]
) -> dict[int, list[tuple[int, str, str]]]:
    """For each model, its ancestry as (id, name, kind), root first and the model itself last."""
    if not model_ids:
        return {}
    m = RegisteredModel
    anchor = select(
        m.id.label("start_id"),
        m.id.label("id"),
        m.parent_id.label("parent_id"),
        literal(0).label("depth"),
    ).where(m.id.in_(model_ids))
    tree = anchor.cte("lineage", recursive=True)
    parent = (
        select(tree.c.start_id, m.id, m.parent_id, (tree.c.depth + 1).label("depth"))
        .join(tree, m.id == tree.c.parent_id)
        .where(tree.c.depth < 32)
    )
    tree = tree.union_all(parent)
    rows = await session.execute(
        select(tree.c.start_id, m.id, m.name, m.kind, tree.c.depth)
        .join(m, m.id == tree.c.id)
        .order_by(tree.c.start_id, tree.c.depth.desc())
    )
    out: dict[int, list[tuple[int, str, str]]] = {}
    for start_id, model_id, name, kind, _depth in rows.all():
        out.setdefault(int(start_id), []).append((int(model_id), name, kind))
    return out


# --------------------------------------------------------------------------------------------
# Worker side (sync)


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """What a worker reads about a run: plain values, detached from any session."""

    id: int
    kind: str
    status: str
    request: dict[str, Any]
    start_model: dict[str, Any]
    output_name: str
    attempts: int
    cancel_requested: bool
    lease_owner: str | None
    lease_expired: bool
    artifacts: dict[str, Any]
    data_report: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]


_MERGED_JSON = frozenset({"progress", "metrics", "data_report", "artifacts"})


def transition_stmt(
    run_id: int, target: str, *where: ColumnElement[bool], table: Any = TrainingRun, **values: Any
) -> Any:
    """The one status change of a training run (chatpgt.orchestration.leases.transition_stmt with
    the training run's lifecycle): ``where`` adds conditions (a lease owner, an expired lease),
    ``values`` sets more columns; an empty result means "not allowed now"."""
    return leases.transition_stmt(table, TRAINING_RUN, run_id, target, *where, **values)


def _sqlite_json_merge(column: Any, value: dict[str, Any]) -> ColumnElement[Any]:
    """SQLite's form of JSONB ``column || value``: each top-level key of ``value`` replaces the
    stored one (nested objects are replaced, not merged; a None value is stored as null)."""
    args: list[Any] = [func.coalesce(column, literal("{}"))]
    for key, item in value.items():
        if '"' in key:  # a SQLite JSON path cannot quote it
            raise ValueError(f"a JSON key with a double quote cannot be merged on SQLite: {key!r}")
        args += [literal(f'$."{key}"'), func.json(literal(json.dumps(item)))]
    return func.json_set(*args)


class RunStore:
    """Sync access to one database for the worker (training thread and heartbeat thread).

    Every write that a worker makes while it holds a run is guarded by its lease owner, so a
    worker that lost its lease (another took the run over) changes nothing.
    """

    # The rows this store holds leases on; evaluation runs use a subclass with their own table.
    table: Any = TrainingRun

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read_leased(self, run_id: int) -> tuple[Any, bool] | None:
        """The row (detached) and whether its lease is free: never taken, or run out."""
        with Session(self.engine) as session:
            stmt = select(self.table, leases.lease_free(self.table)).where(self.table.id == run_id)
            row = session.execute(stmt).first()
            return None if row is None else (row[0], bool(row[1]))

    def snapshot(self, run_id: int) -> RunSnapshot | None:
        found = self.read_leased(run_id)
        if found is None:
            return None
        run, expired = found
        return RunSnapshot(
            id=run.id,
            kind=run.kind,
            status=run.status,
            request=dict(run.request),
            start_model=dict(run.start_model),
            output_name=run.output_name,
            attempts=run.attempts,
            cancel_requested=run.cancel_requested,
            lease_owner=run.lease_owner,
            lease_expired=bool(expired),
            artifacts=dict(run.artifacts or {}),
            data_report=dict(run.data_report or {}),
            progress=dict(run.progress or {}),
            metrics=dict(run.metrics or {}),
        )

    def claim(self, run_id: int, owner: str, lease_s: float, max_attempts: int) -> bool:
        """Take a queued run, or a running one whose lease expired (its worker died).

        Counts an attempt. False when the run is terminal, held by a live worker, or out of
        attempts.
        """
        t = self.table
        now = utcnow()
        stmt = transition_stmt(
            run_id,
            RunStatus.RUNNING,
            or_(
                t.status == RunStatus.QUEUED,
                t.lease_expires_at.is_(None),
                t.lease_expires_at < now,
            ),
            t.attempts < max_attempts,
            table=t,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=t.attempts + 1,
            started_at=func.coalesce(t.started_at, literal(now, UTCDateTime)),
            error=None,
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).first() is not None

    def heartbeat(self, run_id: int, owner: str, lease_s: float) -> bool | None:
        """Renew the lease. Returns the cancel flag, or None when the lease is no longer ours."""
        t = self.table
        stmt = leases.renew_stmt(t, run_id, owner, lease_s, t.status == RunStatus.RUNNING)
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else bool(row[0])

    def update(self, run_id: int, owner: str, **values: Any) -> bool | None:
        """Write progress, metrics, reports or artifacts of a run we hold.

        JSON columns given here are merged key by key into what is stored. Returns the cancel
        flag, or None when the lease is no longer ours.
        """
        t = self.table
        sqlite = self.engine.dialect.name == "sqlite"
        sets: dict[str, Any] = {"updated_at": utcnow()}
        for key, value in values.items():
            column = getattr(t, key)
            if key not in _MERGED_JSON:
                sets[key] = value
            elif sqlite:
                sets[key] = _sqlite_json_merge(column, value)
            else:
                sets[key] = func.coalesce(column, literal({}, JSONB)).op("||")(
                    literal(value, JSONB)
                )
        stmt = (
            update(t)
            .where(
                t.id == run_id,
                t.lease_owner == owner,
                t.status == RunStatus.RUNNING,
            )
            .values(**sets)
            .returning(t.cancel_requested)
        )
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else bool(row[0])

    def finish(
        self,
        run_id: int,
        owner: str | None,
        status: str,
        *,
        error: str | None = None,
        register: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """Move a run to a terminal status; with ``register``, add its model in the same
        transaction. ``owner`` None finishes a run nobody holds (out of attempts)."""
        t = self.table
        guard = [] if owner is None else [t.lease_owner == owner]
        stmt = transition_stmt(run_id, status, *guard, table=t, error=error, **values)
        with self.engine.begin() as conn:
            if conn.execute(stmt).first() is None:
                return False
            if register is not None:
                self._register(conn, run_id=run_id, **register)
        return True

    @staticmethod
    def _register(
        conn: Any,
        *,
        run_id: int,
        name: str,
        kind: str,
        path: str,
        metrics: dict[str, Any],
        parent_id: int | None,
        base: dict[str, str] | None,
    ) -> None:
        insert = insert_for(conn.dialect.name)
        if base is not None:
            # The base a first SFT starts from enters the registry as the root of its lineage.
            conn.execute(
                insert(RegisteredModel)
                .values(name=base["name"], kind="base", path=base["path"], metrics={})
                .on_conflict_do_nothing(index_elements=["name"])
            )
            parent_id = conn.execute(
                select(RegisteredModel.id).where(RegisteredModel.name == base["name"])
            ).scalar_one()
        taken = conn.execute(select(RegisteredModel.id).where(RegisteredModel.name == name)).first()
        conn.execute(
            insert(RegisteredModel)
            .values(
                name=f"{name}-run-{run_id}" if taken else name,
                kind=kind,
                path=path,
                metrics=metrics,
                parent_id=parent_id,
                run_id=run_id,
            )
            .on_conflict_do_nothing(index_elements=["run_id"])
        )

    def holds_live_lease(self, host: str) -> bool:
        """Whether a process on ``host`` holds a running run's unexpired lease (lease owners are
        ``host:pid:token``): a busy ``--pool solo`` worker cannot answer pings, this can."""
        now = utcnow()
        with Session(self.engine) as session:
            found = session.scalar(
                select(TrainingRun.id)
                .where(
                    TrainingRun.status == RunStatus.RUNNING,
                    TrainingRun.lease_owner.startswith(f"{host}:", autoescape=True),
                    TrainingRun.lease_expires_at > now,
                )
                .limit(1)
            )
        return found is not None

    def kinds(self, run_ids: Sequence[int]) -> dict[int, str]:
        """``{run id: kind}`` ("sft", "dpo") of these runs."""
        if not run_ids:
            return {}
        with Session(self.engine) as session:
            rows = session.execute(
                select(TrainingRun.id, TrainingRun.kind).where(TrainingRun.id.in_(run_ids))
            )
            return {int(run_id): kind for run_id, kind in rows}

    def orphaned_runs(self, queued_for_s: float) -> list[tuple[int, float]]:
        """Runs a starting worker should (re)enqueue, with the seconds to wait first: every
        running run (0 when its lease has expired, else until it expires — a worker restarted
        quickly finds its own dead run's lease still running), and runs queued for longer than
        ``queued_for_s`` (their message may be lost, e.g. Redis was flushed)."""
        now = utcnow()
        with Session(self.engine) as session:
            rows = session.execute(leases.recoverable_stmt(TrainingRun, queued_for_s)).all()
        return [(int(run_id), leases.wait_until_free(expires, now)) for run_id, expires in rows]


# --- the essay splits of a lineage (evaluation's held-out essays, DPO's submit check) --------


@dataclass(frozen=True, slots=True)
class SplitRun:
    """A succeeded SFT run with a stored essay split, or a DPO run of a lineage."""

    run_id: int
    kind: str
    request: dict[str, Any]
    essay_split: dict[str, Any] | None
    artifacts: dict[str, Any]
    data_report: dict[str, Any]


async def runs_of_models(session: AsyncSession, model_ids: Sequence[int]) -> list[SplitRun]:
    """The training runs that produced these registered models (base models have none)."""
    if not model_ids:
        return []
    rows = await session.execute(
        select(TrainingRun)
        .join(RegisteredModel, RegisteredModel.run_id == TrainingRun.id)
        .where(RegisteredModel.id.in_(model_ids))
        .order_by(TrainingRun.id)
    )
    return [_split_run(r) for r in rows.scalars().all()]


async def training_run(session: AsyncSession, run_id: int) -> SplitRun | None:
    run = await session.get(TrainingRun, run_id)
    return _split_run(run) if run is not None else None


def _split_run(run: TrainingRun) -> SplitRun:
    return SplitRun(
        run_id=run.id,
        kind=run.kind,
        request=dict(run.request),
        essay_split=dict(run.essay_split) if run.essay_split else None,
        artifacts=dict(run.artifacts or {}),
        data_report=dict(run.data_report or {}),
    )


async def count_pairs_on_topics(
    session: AsyncSession, filters: PairFilters, topics: Sequence[str]
) -> int:
    """How many pairs matching ``filters`` have one of ``topics`` as their topic."""
    if not topics:
        return 0
    inner = select_pairs(filters).where(Pair.topic.in_(list(topics))).order_by(None).subquery()
    return int((await session.execute(select(func.count()).select_from(inner))).scalar_one())


async def lineage_runs(session: AsyncSession, model_ids: list[int]) -> list[SplitRun]:
    """The training runs behind these models and all their ancestors."""
    chains = await lineages(session, model_ids)
    ancestry = sorted({i for chain in chains.values() for i, _, _ in chain} | set(model_ids))
    return await runs_of_models(session, ancestry)


async def lineage_heldout_topics(
    session: AsyncSession, model_id: int
) -> tuple[int, list[str]] | None:
    """(SFT run id, held-out titles) of the one SFT split in the lineage of ``model_id``; None
    when the lineage stored no split or several (evaluation then asks which one)."""
    splits = [
        r for r in await lineage_runs(session, [model_id]) if r.kind == "sft" and r.essay_split
    ]
    if len({r.run_id for r in splits}) != 1:
        return None
    chosen = splits[0]
    return chosen.run_id, [e["title"] for e in (chosen.essay_split or {}).get("eval", [])]
