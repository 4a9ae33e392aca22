"""Statistics of a selection of pairs, computed by SQL aggregates (no row reaches Python)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen import inspect
from chatpgt.pairs import repository
from chatpgt.pairs.repository import PairFilters
from chatpgt.pairs.schemas import (
    ConfidenceBucket,
    CostSummary,
    JudgeConsistency,
    Lengths,
    LengthStats,
    Matchup,
    ModelRecord,
    PairCounts,
    PairStats,
    WorkCost,
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


async def pair_stats(session: AsyncSession, filters: PairFilters) -> PairStats:
    """Counts, confidence histogram, wins and losses per model, matchups and essay lengths of
    the pairs matching ``filters``; judge order-flip rate and cost of the filtered jobs' work
    (every job when ``filters.job_ids`` is empty)."""
    totals = await repository.pair_totals(session, filters)
    buckets, matchup_counts = await repository.pair_group_counts(session, filters)
    matchups, flips = await inspect.judge_flip_counts(session, filters.job_ids)
    costs = await inspect.work_costs(session, filters.job_ids)

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

    work = {
        name: WorkCost(count=n, cost_usd=cost, prompt_tokens=p, completion_tokens=c)
        for name, (n, cost, p, c) in costs.items()
    }
    return PairStats(
        counts=PairCounts(total=totals.total, judged=totals.judged, corpus=totals.corpus),
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
        ),
    )
