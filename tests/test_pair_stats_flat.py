"""GET /pairs/stats is flat in the number of judgments: over finished jobs whose summaries are
stored, no figure (judge, cost, position bias, human-label calibration) reads a generation or
a judgment. Measured by Postgres itself: ``pg_stat_xact_user_tables`` counts every scan of a
table (sequential, index, index-only, bitmap) by this backend (its counts not yet flushed to
the shared statistics, which happens between transactions only: read before and after, in one
transaction)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen.models import DatagenJob
from chatpgt.pairs.labels import PairLabel
from chatpgt.pairs.repository import PairFilters
from chatpgt.review import service as review
from tests import factories

WORK_TABLES = ("generations", "judgments")


async def _seed_job(session: AsyncSession, topics: int, **job: Any) -> DatagenJob:
    """A job of ``topics`` topics, each: two essays, judged in both orders (the second topic of
    every three flipped), a pair, and a label on every other pair."""
    row = await factories.job(session, **job)
    for i in range(topics):
        topic = await factories.topic(session, f"Flat {row.id}-{i}")
        a = await factories.generation(session, row, topic, "m1", "x" * (100 + i), cost_usd="0.1")
        b = await factories.generation(session, row, topic, "m2", "y" * 90, cost_usd="0.2")
        first = await factories.judgment(session, a, b, "A", cost_usd="0.01")
        second = await factories.judgment(session, b, a, "A" if i % 3 == 1 else "B")
        pair = await factories.judged_pair(
            session, a, b, 3 + i % 7, topic_title=topic.title, judgments=(first, second)
        )
        if i % 2 == 0:
            session.add(
                PairLabel(
                    pair_id=pair.id,
                    reviewer="r",
                    choice="A",
                    shown_order="AB",
                    preferred="chosen",
                )
            )
    await session.flush()
    return row


async def _work_scans(session: AsyncSession) -> dict[str, int]:
    """Scans of the work tables counted by this backend so far (see the module's docstring)."""
    rows = await session.execute(
        text(
            "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = ANY(:names)"
        ),
        {"names": list(WORK_TABLES)},
    )
    scans = dict.fromkeys(WORK_TABLES, 0)
    scans.update({name: int(n) for name, n in rows})
    return scans


async def _read(
    sessionmaker: async_sessionmaker[AsyncSession], filters: PairFilters
) -> tuple[dict[str, Any], dict[str, int]]:
    """The stats of ``filters`` in one transaction, and that transaction's work-table scans."""
    async with sessionmaker() as s:
        before = await _work_scans(s)
        stats = await review.stats_with_labels(s, filters)
        after = await _work_scans(s)
        await s.commit()
    return stats.model_dump(), {name: after[name] - before[name] for name in WORK_TABLES}


async def test_stats_over_summarised_jobs_read_no_judgment(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    finished = datetime(2026, 12, 1, tzinfo=UTC)
    small = await _seed_job(session, 6, finished_at=finished)
    large = await _seed_job(session, 60, finished_at=finished)
    await session.commit()

    # The first read finds no stored summary and computes them from the work: the counter
    # sees those reads (so it would see any other).
    first, scans = await _read(sessionmaker, PairFilters())
    assert scans["judgments"] > 0 and scans["generations"] > 0

    for filters in (
        PairFilters(),
        PairFilters(min_confidence=6),
        PairFilters(job_ids=(small.id,)),
        PairFilters(job_ids=(large.id,), model="m1", dedup_threshold=0.5),
    ):
        stats, scans = await _read(sessionmaker, filters)
        assert scans == {"generations": 0, "judgments": 0}, filters
        if filters == PairFilters():
            assert stats == first

    # The figures that used to read the work on every call are all there, from the summaries.
    assert first["judge"] == {"matchups": 66, "flips": 22, "flip_rate": 1 / 3}
    assert first["cost"]["generations"]["count"] == 132
    assert first["cost"]["judgments"]["count"] == 132
    # "A" wins the first order always and the second order on flipped topics
    assert first["bias"]["position"]["a_wins"] == 66 + 22
    assert first["bias"]["position"]["b_wins"] == 44
    per_job = {j["job_id"]: j["position"] for j in first["bias"]["per_job"]}
    assert per_job[small.id] == {"a_wins": 8, "b_wins": 4, "a_win_share": 8 / 12}
    # 3 + 30 labels, all agreeing with the judge: every threshold meets the target
    assert first["human_labels"] == {"labels": 33, "target": 0.8, "suggested_min_confidence": 1}


async def test_stats_calibration_matches_the_full_calibration(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The labels block of stats (labels only) gives the figures the judges' calibration (which
    also reads the work) gives over the same selection."""
    job = await _seed_job(session, 12)
    # one disagreeing label and one tie, in low buckets
    pairs = (await session.execute(text("SELECT id FROM pairs ORDER BY id"))).scalars().all()
    for pair_id, preferred in ((pairs[1], "rejected"), (pairs[3], "tie")):
        session.add(
            PairLabel(
                pair_id=pair_id, reviewer="s", choice="B", shown_order="AB", preferred=preferred
            )
        )
    await session.commit()
    for filters in (PairFilters(), PairFilters(job_ids=(job.id,), min_confidence=7)):
        async with sessionmaker() as s:
            short = await review.stats_calibration(s, filters, target=0.9)
            full = await review.calibration(s, PairFilters(job_ids=filters.job_ids), target=0.9)
        assert short.labels == sum(j.labels for j in full.judges) == 8
        assert short.suggested_min_confidence == full.suggested_min_confidence
