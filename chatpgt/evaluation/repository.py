"""All SQL of evaluation: eval runs (API side, async; worker side, :class:`EvalStore`), and the
reads that find a lineage's SFT split and the other-writer essays."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from chatpgt.datagen.models import Generation
from chatpgt.db.base import utcnow
from chatpgt.evaluation.models import EvalRun
from chatpgt.orchestration.status import RunStatus
from chatpgt.review.arena import Vote, votes_between
from chatpgt.training.models import RegisteredModel
from chatpgt.training.repository import RunStore

# --------------------------------------------------------------------------------------------
# API side (async)


async def create_run(
    session: AsyncSession,
    *,
    name: str | None,
    request: dict[str, Any],
    models: list[dict[str, Any]],
    heldout: dict[str, Any],
) -> EvalRun:
    run = EvalRun(
        status=RunStatus.QUEUED,
        name=name,
        request=request,
        models=models,
        heldout=heldout,
        progress={},
        results={},
        artifacts={},
    )
    session.add(run)
    await session.flush()
    return run


async def get_run(session: AsyncSession, run_id: int) -> EvalRun | None:
    return await session.get(EvalRun, run_id, populate_existing=True)


async def list_runs(
    session: AsyncSession, *, limit: int, before: int | None = None, status: str | None = None
) -> Sequence[EvalRun]:
    stmt = select(EvalRun).order_by(EvalRun.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(EvalRun.id < before)
    if status:
        stmt = stmt.where(EvalRun.status == status)
    return (await session.scalars(stmt)).all()


async def models_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, RegisteredModel]:
    if not ids:
        return {}
    rows = await session.scalars(select(RegisteredModel).where(RegisteredModel.id.in_(ids)))
    return {m.id: m for m in rows.all()}


async def count_candidate_essays(session: AsyncSession) -> int:
    """Succeeded datagen generations: the other writers a style classifier can learn from."""
    stmt = select(func.count()).where(
        Generation.status == "succeeded", Generation.text.is_not(None)
    )
    return int((await session.execute(stmt.select_from(Generation))).scalar_one())


# --------------------------------------------------------------------------------------------
# Worker side (sync)


@dataclass(frozen=True, slots=True)
class EvalSnapshot:
    id: int
    status: str
    name: str | None
    request: dict[str, Any]
    models: list[dict[str, Any]]
    heldout: dict[str, Any]
    attempts: int
    cancel_requested: bool
    lease_expired: bool
    artifacts: dict[str, Any]
    created_at: datetime


class EvalStore(RunStore):
    """The training run store's lease, heartbeat, update and transition statements, on
    ``eval_runs``; plus the reads an evaluation needs."""

    table = EvalRun

    def eval_snapshot(self, run_id: int) -> EvalSnapshot | None:
        found = self.read_leased(run_id)
        if found is None:
            return None
        run, expired = found
        return EvalSnapshot(
            id=run.id,
            status=run.status,
            name=run.name,
            request=dict(run.request),
            models=list(run.models),
            heldout=dict(run.heldout),
            attempts=run.attempts,
            cancel_requested=run.cancel_requested,
            lease_expired=bool(expired),
            artifacts=dict(run.artifacts or {}),
            created_at=run.created_at,
        )

    def candidate_essays(self, limit: int, exclude_models: Collection[str] = ()) -> list[str]:
        """Texts of succeeded datagen generations (other models writing on the topics), leaving
        out those written by ``exclude_models`` (the evaluated models' paths and names: a
        model's own essays among the "other writers" would teach the classifier that its
        writing is not the author's)."""
        stmt = select(Generation.text).where(
            Generation.status == "succeeded", Generation.text.is_not(None)
        )
        if exclude_models:
            stmt = stmt.where(Generation.model.not_in(sorted(set(exclude_models))))
        with Session(self.engine) as session:
            rows = session.scalars(stmt.order_by(Generation.id).limit(limit)).all()
        return [t for t in rows if t and t.strip()]

    def human_votes(self, model_ids: Collection[int]) -> list[Vote]:
        """The playground's votes between two of ``model_ids``."""
        with Session(self.engine) as session:
            return votes_between(session, model_ids)

    def orphaned_eval_runs(self, queued_for_s: float) -> list[tuple[int, float]]:
        from datetime import timedelta

        from sqlalchemy import and_

        now = utcnow()
        with Session(self.engine) as session:
            rows = session.execute(
                select(EvalRun.id, EvalRun.lease_expires_at).where(
                    or_(
                        EvalRun.status == RunStatus.RUNNING,
                        and_(
                            EvalRun.status == RunStatus.QUEUED,
                            EvalRun.created_at < now - timedelta(seconds=queued_for_s),
                        ),
                    )
                )
            ).all()
        return [(int(i), max(0.0, (e - now).total_seconds()) if e else 0.0) for i, e in rows]
