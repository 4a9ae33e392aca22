"""Statistics of a selection of pairs, computed by SQL aggregates (no pair row reaches Python).

On Postgres the pairs part is one index-only scan with grouping sets (lengths as histograms, so
medians need no sort); the judge and cost part of a finished job is computed once and stored
(``job_work_summaries``), so a read over many finished jobs scans only the unfinished ones' work.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.db.helpers import is_sqlite
from chatpgt.pairs import repository
from chatpgt.pairs.repository import WORK_FIELDS, PairFilters
from chatpgt.pairs.schemas import (
    BiasStats,
    ConfidenceBucket,
    CostSummary,
    DedupFigures,
    JobBias,
    JudgeConsistency,
    LengthBias,
    Lengths,
    LengthStats,
    Matchup,
    ModelRecord,
    PairCounts,
    PairStats,
    PositionBias,
    WorkCost,
)


def model_records(matchup_counts: Sequence[tuple[str, str, int]]) -> list[ModelRecord]:
    """Wins, losses and win rate per model from (chosen, rejected, count), most wins first."""
    wins: Counter[str] = Counter()
    losses: Counter[str] = Counter()
    for chosen, rejected, count in matchup_counts:
        wins[chosen] += count
        losses[rejected] += count
    models = [
        ModelRecord(
            model=model,
            wins=wins[model],
            losses=losses[model],
            win_rate=wins[model] / (wins[model] + losses[model]),
        )
        for model in sorted(wins.keys() | losses.keys())
    ]
    models.sort(key=lambda m: (-m.wins, m.losses, m.model))
    return models


def _share(part: int, other: int) -> float | None:
    return part / (part + other) if part + other else None


def _length_bias(total: int, longer: int, shorter: int) -> LengthBias:
    return LengthBias(
        chosen_longer=longer,
        chosen_shorter=shorter,
        equal_length=total - longer - shorter,
        chosen_longer_share=_share(longer, shorter),
    )


def _position_bias(a: int, b: int) -> PositionBias:
    return PositionBias(a_wins=a, b_wins=b, a_win_share=_share(a, b))


async def bias_stats(
    session: AsyncSession,
    filters: PairFilters,
    work: dict[int, dict[str, Any]],
    agg: repository.PairAggregates | None = None,
) -> BiasStats:
    """Length and position bias and generator win rates, over the selection and per job.

    Length and win rates are over the matching pairs; position over the successful verdicts of
    the filtered jobs (every job without a job filter), as the judge's flip rate is, taken from
    ``work`` (:func:`job_work`). The per-job pair counts come from ``agg`` when given (the
    one scan of :func:`repository.pair_aggregates`), else from two grouped reads."""
    if agg is not None:
        per_job_lengths = agg.job_lengths
        job_matchups = agg.job_matchups
    else:
        per_job_lengths = await repository.job_length_counts(session, filters)
        job_matchups = await repository.job_matchup_counts(session, filters)
    positions = {job_id: (w["position_a_wins"], w["position_b_wins"]) for job_id, w in work.items()}
    matchups: dict[int, list[tuple[str, str, int]]] = {}
    for job_id, chosen, rejected, n in job_matchups:
        matchups.setdefault(job_id, []).append((chosen, rejected, n))
    per_job = [
        JobBias(
            job_id=c.job_id,
            pairs=c.total,
            length=_length_bias(c.total, c.chosen_longer, c.chosen_shorter),
            position=_position_bias(*positions.get(c.job_id, (0, 0))),
            models=model_records(matchups.get(c.job_id, [])),
        )
        for c in per_job_lengths
    ]
    return BiasStats(
        length=_length_bias(
            sum(c.total for c in per_job_lengths),
            sum(c.chosen_longer for c in per_job_lengths),
            sum(c.chosen_shorter for c in per_job_lengths),
        ),
        position=_position_bias(
            sum(a for a, _ in positions.values()), sum(b for _, b in positions.values())
        ),
        per_job=per_job,
    )


async def dedup_figures(session: AsyncSession, filters: PairFilters) -> DedupFigures:
    threshold = filters.dedup_threshold
    excluded = 0
    if threshold is not None:
        everything = dataclasses.replace(filters, dedup_threshold=None)
        excluded = await repository.count_pairs(session, everything) - await repository.count_pairs(
            session, filters
        )
    return DedupFigures(
        flagged_essays=await repository.near_duplicate_counts(session, filters.job_ids, threshold),
        threshold=threshold,
        pairs_excluded=excluded,
    )


def _lengths(totals: object, prefix: str) -> LengthStats | None:
    mean = getattr(totals, f"{prefix}_mean")
    if mean is None:
        return None
    return LengthStats(
        mean=float(mean),
        median=float(getattr(totals, f"{prefix}_median")),
        min=int(getattr(totals, f"{prefix}_min")),
        max=int(getattr(totals, f"{prefix}_max")),
    )


def _histogram_stats(hist: dict[int, int]) -> dict[str, Any]:
    """mean, median (percentile_cont(0.5): the mean of the two middle values when the count is
    even), min and max of the values counted in ``hist``; all None when it is empty."""
    n = sum(hist.values())
    if n == 0:
        return dict.fromkeys(("mean", "median", "min", "max"))
    values = sorted(hist)
    low_pos, high_pos = (n - 1) // 2, n // 2
    low = high = None
    seen = 0
    for value in values:
        seen += hist[value]
        if low is None and seen > low_pos:
            low = value
        if seen > high_pos:
            high = value
            break
    assert low is not None and high is not None
    return {
        "mean": sum(v * c for v, c in hist.items()) / n,
        "median": (low + high) / 2,
        "min": values[0],
        "max": values[-1],
    }


def _totals(agg: repository.PairAggregates) -> SimpleNamespace:
    values: dict[str, Any] = {
        "total": sum(agg.buckets.values()),
        "judged": agg.sources.get("judged", 0),
        "corpus": agg.sources.get("corpus", 0),
        "imported": agg.sources.get("imported", 0),
    }
    for prefix, hist in (("chosen", agg.chosen_lengths), ("rejected", agg.rejected_lengths)):
        for key, value in _histogram_stats(hist).items():
            values[f"{prefix}_{key}"] = value
    return SimpleNamespace(**values)


async def job_work(session: AsyncSession, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``{job id: WORK_FIELDS}`` of the given jobs (every job when empty). A finished job's
    figures come from its stored summary, computed and stored (in the session's transaction;
    the caller commits) when missing or older than the job's ``finished_at``; an unfinished
    job's are computed on every call (through the work tables' ``job_id`` indexes). Over
    summarised finished jobs this reads no generation and no judgment."""
    finish_times = await repository.job_finish_times(session, job_ids)
    saved = await repository.saved_job_summaries(session, job_ids)
    current = {
        job_id: row
        for job_id, row in saved.items()
        if job_id in finish_times and row["finished_at"] == finish_times[job_id]
    }
    to_compute = [job_id for job_id in finish_times if job_id not in current]
    computed = await repository.compute_job_work(session, to_compute)
    # In job id order: concurrent reads that store the same summaries lock them in one order.
    await repository.save_job_summaries(
        session,
        [
            {"job_id": job_id, "finished_at": finish_times[job_id], **work}
            for job_id, work in sorted(computed.items())
            if finish_times[job_id] is not None
        ],
    )
    return {**current, **computed}


def work_totals(work: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``WORK_FIELDS`` summed over the jobs of :func:`job_work`."""
    totals: dict[str, Any] = dict.fromkeys(WORK_FIELDS, 0)
    for name in repository.MONEY_WORK_FIELDS:
        totals[name] = Decimal(0)
    for row in work.values():
        for name in WORK_FIELDS:
            totals[name] += row[name]
    return totals


async def job_work_totals(session: AsyncSession, job_ids: Sequence[int]) -> dict[str, Any]:
    """``WORK_FIELDS`` summed over the given jobs (every job when empty); see
    :func:`job_work`."""
    return work_totals(await job_work(session, job_ids))


async def pair_stats(session: AsyncSession, filters: PairFilters) -> PairStats:
    """Counts, confidence histogram, wins and losses per model, matchups and essay lengths of
    the pairs matching ``filters``; judge order-flip rate and cost of the filtered jobs' work
    (every job when ``filters.job_ids`` is empty)."""
    agg = None
    if is_sqlite(session):
        totals = await repository.sqlite_pair_totals(session, filters)
        buckets, matchup_counts = await repository.sqlite_group_counts(session, filters)
    else:
        agg = await repository.pair_aggregates(session, filters)
        totals = _totals(agg)
        buckets, matchup_counts = agg.buckets, agg.matchups
    per_job_work = await job_work(session, filters.job_ids)
    work = work_totals(per_job_work)
    matchups, flips = work["matchups"], work["flips"]
    costs = {
        name: (
            work[name],
            float(work[f"{name}_cost_usd"]),
            work[f"{name}_prompt_tokens"],
            work[f"{name}_completion_tokens"],
            work[f"{name}_cache_hits"],
            float(work[f"{name}_saved_usd"]),
        )
        for name in ("generations", "judgments")
    }

    models = model_records(matchup_counts)

    work = {
        name: WorkCost(
            count=n,
            cost_usd=cost,
            prompt_tokens=p,
            completion_tokens=c,
            cache_hits=hits,
            saved_usd=saved,
        )
        for name, (n, cost, p, c, hits, saved) in costs.items()
    }
    return PairStats(
        counts=PairCounts(
            total=totals.total,
            judged=totals.judged,
            corpus=totals.corpus,
            imported=totals.imported,
        ),
        confidence_histogram=[
            ConfidenceBucket(bucket=b, count=buckets.get(b, 0)) for b in range(1, 11)
        ],
        models=models,
        matchups=[
            Matchup(chosen_model=chosen, rejected_model=rejected, count=count)
            for chosen, rejected, count in sorted(matchup_counts, key=lambda m: (-m[2], m[0], m[1]))
        ],
        lengths=Lengths(chosen=_lengths(totals, "chosen"), rejected=_lengths(totals, "rejected")),
        judge=JudgeConsistency(
            matchups=matchups, flips=flips, flip_rate=flips / matchups if matchups else None
        ),
        cost=CostSummary(
            generations=work["generations"],
            judgments=work["judgments"],
            total_cost_usd=work["generations"].cost_usd + work["judgments"].cost_usd,
            total_saved_usd=work["generations"].saved_usd + work["judgments"].saved_usd,
        ),
        bias=await bias_stats(session, filters, per_job_work, agg),
        dedup=await dedup_figures(session, filters),
    )
