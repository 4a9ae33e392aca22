"""All SQL over pairs: filtered keyset pages, streaming for export, statistics."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, or_, select

from chatpgt.pairs.models import Pair


@dataclass(frozen=True, slots=True)
class PairFilters:
    """The selection shared by GET /pairs, /pairs/stats, /pairs/export and DPO training."""

    min_confidence: float | None = None
    job_ids: tuple[int, ...] = ()
    model: str | None = None  # matches the chosen or the rejected model
    source: str | None = None  # "judged" or "corpus"


def select_pairs(filters: PairFilters) -> Select[tuple[Pair]]:
    """Pairs matching ``filters`` in keyset order (ascending id)."""
    stmt = select(Pair).order_by(Pair.id)
    if filters.min_confidence is not None:
        stmt = stmt.where(Pair.confidence >= filters.min_confidence)
    if filters.job_ids:
        stmt = stmt.where(Pair.job_id.in_(filters.job_ids))
    if filters.model:
        stmt = stmt.where(or_(Pair.chosen_model == filters.model, Pair.rejected_model == filters.model))
    if filters.source:
        stmt = stmt.where(Pair.source == filters.source)
    return stmt
