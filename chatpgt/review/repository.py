"""All SQL of human review: labels, the review list, and the counts calibration is built from.

Functions ``flush()`` when they write; the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen import repository as datagen_repo
from chatpgt.datagen.models import DatagenJob, Judgment
from chatpgt.db.base import utcnow
from chatpgt.db.helpers import dialect_insert
from chatpgt.pairs.consensus import consensus_of
from chatpgt.pairs.labels import PairLabel
from chatpgt.pairs.models import Pair
from chatpgt.pairs.repository import PairFilters, _conditions

LABEL_FIELDS = ("choice", "shown_order", "preferred", "note")


# --- labels ---------------------------------------------------------------------------------


async def pair_exists(session: AsyncSession, pair_id: int) -> bool:
    return (await session.execute(select(Pair.id).where(Pair.id == pair_id))).first() is not None


async def label_of(session: AsyncSession, pair_id: int, reviewer: str) -> PairLabel | None:
    stmt = select(PairLabel).where(PairLabel.pair_id == pair_id, PairLabel.reviewer == reviewer)
    return (await session.execute(stmt)).scalar_one_or_none()


async def put_label(session: AsyncSession, *, pair_id: int, reviewer: str, **values: Any) -> None:
    """Insert the reviewer's label on the pair, or replace theirs (one row per reviewer)."""
    now = utcnow()
    insert = dialect_insert(session)(PairLabel).values(
        pair_id=pair_id, reviewer=reviewer, created_at=now, updated_at=now, **values
    )
    stmt = insert.on_conflict_do_update(
        index_elements=[PairLabel.pair_id, PairLabel.reviewer],
        set_={**{name: insert.excluded[name] for name in LABEL_FIELDS}, "updated_at": now},
    )
    await session.execute(stmt)
    await session.flush()


async def labels_of(session: AsyncSession, pair_id: int) -> Sequence[PairLabel]:
    stmt = select(PairLabel).where(PairLabel.pair_id == pair_id).order_by(PairLabel.id)
    result = await session.execute(stmt.execution_options(populate_existing=True))
    return result.scalars().all()


async def consensus(session: AsyncSession, pair_id: int) -> str | None:
    return (await session.execute(select(consensus_of(pair_id)))).scalar_one_or_none()


# --- the review list ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewFilters:
    """The review page's selection: the pair filters, plus what a reviewer narrows by."""

    pairs: PairFilters = field(default_factory=PairFilters)
    max_confidence: float | None = None
    topic: str | None = None  # substring of the topic, case-insensitive
    flipped: bool = False  # the two verdicts named different winners (probability judges)
    # None; "unlabelled"; "labelled"; "mine" (labelled by ``reviewer``); "not_mine"
    labels: str | None = None
    consensus: str | None = None  # the reviewers' verdict: chosen, rejected, tie or bad
    reviewer: str | None = None


def flipped_verdicts() -> ColumnElement[bool]:
    """The pair's A/B and B/A verdicts named different winning generations."""
    first = Pair.verdicts[(0, "winner_generation_id")].as_integer()
    second = Pair.verdicts[(1, "winner_generation_id")].as_integer()
    return and_(first.is_not(None), second.is_not(None), first != second)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _review_conditions(f: ReviewFilters) -> list[ColumnElement[bool]]:
    conditions = _conditions(f.pairs)
    if f.max_confidence is not None:
        conditions.append(Pair.confidence <= f.max_confidence)
    if f.topic:
        pattern = f"%{_escape_like(f.topic.lower())}%"
        conditions.append(func.lower(Pair.topic).like(pattern, escape="\\"))
    if f.flipped:
        conditions.append(flipped_verdicts())
    labelled = select(PairLabel.id).where(PairLabel.pair_id == Pair.id).exists()
    if f.labels == "unlabelled":
        conditions.append(~labelled)
    elif f.labels == "labelled":
        conditions.append(labelled)
    elif f.labels in ("mine", "not_mine"):
        mine = select(PairLabel.id).where(
            PairLabel.pair_id == Pair.id, PairLabel.reviewer == (f.reviewer or "")
        )
        conditions.append(mine.exists() if f.labels == "mine" else ~mine.exists())
    if f.consensus:
        conditions.append(consensus_of(Pair.id) == f.consensus)
    return conditions


def review_page_statement(f: ReviewFilters, *, after_id: int | None, limit: int) -> Select[Any]:
    """A keyset page of the review list (ascending id): the short columns, the label count,
    the consensus, the reviewer's own label and whether the verdicts flipped."""
    label_count = (
        select(func.count()).where(PairLabel.pair_id == Pair.id).scalar_subquery().label("labels")
    )
    mine = (
        select(PairLabel.preferred)
        .where(PairLabel.pair_id == Pair.id, PairLabel.reviewer == (f.reviewer or ""))
        .scalar_subquery()
        .label("my_label")
    )
    stmt = (
        select(
            Pair.id,
            Pair.job_id,
            Pair.topic,
            Pair.source,
            Pair.confidence,
            Pair.chosen_chars,
            Pair.rejected_chars,
            label_count,
            consensus_of(Pair.id).label("consensus"),
            mine,
            flipped_verdicts().label("flipped"),
        )
        .where(*_review_conditions(f))
        .order_by(Pair.id)
        .limit(limit)
    )
    if after_id is not None:
        stmt = stmt.where(Pair.id > after_id)
    return stmt


async def review_page(
    session: AsyncSession, f: ReviewFilters, *, after_id: int | None, limit: int
) -> Sequence[Any]:
    return (await session.execute(review_page_statement(f, after_id=after_id, limit=limit))).all()


async def pair_for_review(session: AsyncSession, pair_id: int) -> Any | None:
    """One pair with everything the pair view shows (texts, verdicts, lengths)."""
    stmt = select(
        Pair.id,
        Pair.job_id,
        Pair.topic,
        Pair.prompt,
        Pair.source,
        Pair.chosen,
        Pair.rejected,
        Pair.chosen_model,
        Pair.rejected_model,
        Pair.chosen_generation_id,
        Pair.rejected_generation_id,
        Pair.judgment_reasoning,
        Pair.confidence,
        Pair.judge_model,
        Pair.verdicts,
        Pair.chosen_chars,
        Pair.rejected_chars,
    ).where(Pair.id == pair_id)
    return (await session.execute(stmt)).first()


# --- what calibration counts ----------------------------------------------------------------


def _judged(filters: PairFilters) -> list[ColumnElement[bool]]:
    return [*_conditions(filters), Pair.source == "judged"]


def _longer() -> ColumnElement[str | None]:
    return case(
        (Pair.chosen_chars > Pair.rejected_chars, "chosen"),
        (Pair.rejected_chars > Pair.chosen_chars, "rejected"),
        else_=None,
    )


async def label_counts(
    session: AsyncSession, filters: PairFilters
) -> list[tuple[int, float, str, str | None, int]]:
    """Labels on the judged pairs matching ``filters``, counted by (job, pair confidence,
    preferred, which essay of the pair is the longer: "chosen", "rejected" or None)."""
    longer = _longer().label("longer")
    stmt = (
        select(Pair.job_id, Pair.confidence, PairLabel.preferred, longer, func.count())
        .join(Pair, Pair.id == PairLabel.pair_id)
        .where(*_judged(filters))
        .group_by(Pair.job_id, Pair.confidence, PairLabel.preferred, longer)
    )
    return [(int(j), float(c), p, g, int(n)) for j, c, p, g, n in await session.execute(stmt)]


async def judged_pair_lengths(
    session: AsyncSession, filters: PairFilters
) -> dict[int, tuple[int, int, int]]:
    """Per job: (judged pairs, those whose essays differ in length, those whose chosen essay
    is the longer)."""
    stmt = (
        select(
            Pair.job_id,
            func.count(),
            func.count().filter(Pair.chosen_chars != Pair.rejected_chars),
            func.count().filter(Pair.chosen_chars > Pair.rejected_chars),
        )
        .where(*_judged(filters))
        .group_by(Pair.job_id)
    )
    return {int(j): (int(n), int(d), int(c)) for j, n, d, c in await session.execute(stmt)}


async def judges_of_jobs(
    session: AsyncSession, job_ids: Sequence[int]
) -> dict[int, tuple[str, str, str]]:
    """``{job id: (provider, model, method)}`` of the jobs' judges: the provider and model
    from the job's judgments, the method from its request ("json" when it names none)."""
    if not job_ids:
        return {}
    method = func.coalesce(DatagenJob.request[("judge", "method")].as_string(), "json")
    methods = {
        int(j): str(m)
        for j, m in await session.execute(
            select(DatagenJob.id, method).where(DatagenJob.id.in_(job_ids))
        )
    }
    stmt = (
        select(Judgment.job_id, Judgment.judge_provider, Judgment.judge_model)
        .where(Judgment.job_id.in_(job_ids))
        .group_by(Judgment.job_id, Judgment.judge_provider, Judgment.judge_model)
    )
    judges: dict[int, tuple[str, str, str]] = {}
    for job_id, provider, model in await session.execute(stmt):
        judges.setdefault(int(job_id), (provider, model, methods.get(int(job_id), "json")))
    for job_id in job_ids:
        judges.setdefault(job_id, ("unknown", "unknown", methods.get(job_id, "json")))
    return judges


async def position_counts(
    session: AsyncSession, job_ids: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """Per job: (succeeded judgments, those won by the essay shown as A)."""
    if not job_ids:
        return {}
    stmt = (
        select(Judgment.job_id, func.count(), func.count().filter(Judgment.winner == "A"))
        .where(Judgment.job_id.in_(job_ids), Judgment.status == "succeeded")
        .group_by(Judgment.job_id)
    )
    return {int(j): (int(n), int(a)) for j, n, a in await session.execute(stmt)}


async def flip_counts(session: AsyncSession, job_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Per job: (matchups with both orders judged, those whose verdicts differ)."""
    if not job_ids:
        return {}
    return await datagen_repo.flip_counts(session, job_ids)
