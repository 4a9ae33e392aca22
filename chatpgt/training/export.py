"""Pairs from the database to the TRL conversational preference JSONL that DPO trains on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from chatpgt.datasets.export import write_jsonl
from chatpgt.db.session import make_engine, make_sessionmaker
from chatpgt.pairs.repository import PairFilters


def export_pairs(database_url: str, filters: PairFilters, path: Path) -> int:
    """Write every pair matching ``filters`` (ascending id) to ``path``; returns how many.

    Rows are ``chatpgt.datasets.export`` JSONL lines: ``prompt`` (user messages), ``chosen`` and
    ``rejected`` (one assistant message each) plus id/topic/confidence/model columns, which the
    trainer ignores. The file appears only when complete, so a resumed run can trust it. Sync:
    for the worker, with its own event loop and engine for this one export.
    """

    async def _export() -> int:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                return await write_jsonl(session, filters, path)
        finally:
            await engine.dispose()

    return asyncio.run(_export())


def filters_from_request(selection: dict[str, Any]) -> PairFilters:
    """The :class:`PairFilters` of a DPO request's ``pairs`` field (see ``PairSelection``)."""
    return PairFilters(
        min_confidence=selection.get("min_confidence"),
        job_ids=tuple(selection.get("job_ids") or ()),
        source=selection.get("source"),
        labels=selection.get("labels") or "ignore",
    )
