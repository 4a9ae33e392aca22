"""Labels and judge calibration: what the label routes, the review page and training call.

Calibration compares each judge (provider, model, method) with the reviewers. Every label is
one observation (a pair labelled by three reviewers counts three times); "agreement" is the
share of decisive labels (the reviewer preferred the chosen or the rejected essay) that prefer
the judge's chosen essay. Ties and "bad pair" labels are counted per bucket but are not
agreement observations. A pair's bucket is the floor of its confidence, so the pairs with
confidence ≥ t (an integer) are exactly the buckets ≥ t.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.db.keyset import decode_cursor, encode_cursor
from chatpgt.errors import NotFound
from chatpgt.pairs.repository import PairFilters
from chatpgt.pairs.stats import pair_stats
from chatpgt.review import repository as repo
from chatpgt.review.schemas import (
    DEFAULT_MIN_LABELS,
    DEFAULT_TARGET,
    Calibration,
    CalibrationBucket,
    JudgeCalibration,
    LabelIn,
    LabelOut,
    PairLabels,
    PairStatsCalibration,
    PairStatsWithLabels,
    Rate,
    Threshold,
)

LOCAL_REVIEWER = "local"  # the reviewer of a request made without a key (auth open to loopback)
Z_95 = 1.959963984540054
BUCKETS = range(1, 11)

# Where the essay shown as A sits in the pair, per shown order; and what a choice means.
_PREFERRED = {
    ("A", "AB"): "chosen",
    ("B", "AB"): "rejected",
    ("A", "BA"): "rejected",
    ("B", "BA"): "chosen",
}


def preferred_of(choice: str, shown_order: str) -> str:
    """A label in the pair's terms: the essay the reviewer picked, given what they were shown."""
    if choice in ("tie", "bad"):
        return choice
    return _PREFERRED[(choice, shown_order)]


# --- labels ---------------------------------------------------------------------------------


async def put_label(
    session: AsyncSession, pair_id: int, label: LabelIn, *, reviewer: str
) -> tuple[LabelOut, bool]:
    """Store the reviewer's label (replacing theirs, if any); ``(label, created)``. Raises
    NotFound for an unknown pair (nothing is written)."""
    if not await repo.pair_exists(session, pair_id):
        raise NotFound(f"No pair with id {pair_id}.", pair_id=pair_id)
    existing = await repo.label_of(session, pair_id, reviewer)
    await repo.put_label(
        session,
        pair_id=pair_id,
        reviewer=reviewer,
        choice=label.choice,
        shown_order=label.shown_order,
        preferred=preferred_of(label.choice, label.shown_order),
        note=label.note or None,
    )
    if existing is not None:
        await session.refresh(existing)
    row = existing or await repo.label_of(session, pair_id, reviewer)
    assert row is not None
    return LabelOut.model_validate(row), existing is None


async def pair_labels(session: AsyncSession, pair_id: int) -> PairLabels:
    if not await repo.pair_exists(session, pair_id):
        raise NotFound(f"No pair with id {pair_id}.", pair_id=pair_id)
    rows = await repo.labels_of(session, pair_id)
    return PairLabels(
        pair_id=pair_id,
        consensus=await repo.consensus(session, pair_id),  # type: ignore[arg-type]
        items=[LabelOut.model_validate(r) for r in rows],
    )


# --- calibration ----------------------------------------------------------------------------


def wilson(hits: int, n: int, z: float = Z_95) -> Rate:
    """``hits``/``n`` with its Wilson score interval."""
    if n == 0:
        return Rate(n=0, hits=0, rate=None, low=None, high=None)
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Rate(n=n, hits=hits, rate=p, low=max(0.0, centre - half), high=min(1.0, centre + half))


def bucket_of(confidence: float) -> int:
    return min(max(math.floor(confidence), 1), 10)


@dataclass
class _Tally:
    """Counts of one judge (or of all of them)."""

    per_bucket: dict[int, dict[str, int]] = field(
        default_factory=lambda: {b: defaultdict(int) for b in BUCKETS}
    )
    pairs: int = 0
    length_differs: int = 0
    chosen_longer: int = 0
    matchups: int = 0
    flips: int = 0
    judgments: int = 0
    a_wins: int = 0
    human_length_n: int = 0
    human_longer: int = 0

    def labels(self) -> int:
        return sum(sum(c.values()) for c in self.per_bucket.values())

    def thresholds(self) -> list[Threshold]:
        out = []
        for t in BUCKETS:
            agree = sum(self.per_bucket[b]["chosen"] for b in BUCKETS if b >= t)
            n = agree + sum(self.per_bucket[b]["rejected"] for b in BUCKETS if b >= t)
            out.append(Threshold(min_confidence=t, agreement=wilson(agree, n)))
        return out


def suggest(thresholds: list[Threshold], *, target: float, min_labels: int) -> int | None:
    """The lowest threshold whose agreement is ≥ ``target`` over ≥ ``min_labels`` labels."""
    for t in thresholds:
        a = t.agreement
        if a.n >= max(min_labels, 1) and a.rate is not None and a.rate >= target:
            return t.min_confidence
    return None


async def _tallies(
    session: AsyncSession, filters: PairFilters
) -> tuple[dict[tuple[str, str, str], _Tally], _Tally]:
    label_rows = await repo.label_counts(session, filters)
    lengths = await repo.judged_pair_lengths(session, filters)
    job_ids = sorted(lengths)
    judges = await repo.judges_of_jobs(session, job_ids)
    flips = await repo.flip_counts(session, job_ids)
    positions = await repo.position_counts(session, job_ids)
    tallies: dict[tuple[str, str, str], _Tally] = defaultdict(_Tally)
    overall = _Tally()
    for job_id in job_ids:
        tally = tallies[judges[job_id]]
        pairs, differs, chosen_longer = lengths[job_id]
        matchups, flipped = flips.get(job_id, (0, 0))
        judgments, a_wins = positions.get(job_id, (0, 0))
        for t in (tally, overall):
            t.pairs += pairs
            t.length_differs += differs
            t.chosen_longer += chosen_longer
            t.matchups += matchups
            t.flips += flipped
            t.judgments += judgments
            t.a_wins += a_wins
    for job_id, confidence, preferred, longer, n in label_rows:
        bucket = bucket_of(confidence)
        for t in (tallies[judges[job_id]], overall):
            t.per_bucket[bucket][preferred] += n
            if longer is not None and preferred in ("chosen", "rejected"):
                t.human_length_n += n
                t.human_longer += n if preferred == longer else 0
    return tallies, overall


def _judge(
    key: tuple[str, str, str], t: _Tally, *, target: float, min_labels: int
) -> JudgeCalibration:
    provider, model, method = key
    thresholds = t.thresholds()
    decisive = thresholds[0].agreement
    return JudgeCalibration(
        provider=provider,
        model=model,
        method=method,
        pairs=t.pairs,
        labels=t.labels(),
        agreement=decisive,
        buckets=[
            CalibrationBucket(
                bucket=b,
                labels=sum(c.values()),
                ties=c["tie"],
                bad=c["bad"],
                agreement=wilson(c["chosen"], c["chosen"] + c["rejected"]),
            )
            for b, c in t.per_bucket.items()
        ],
        thresholds=thresholds,
        suggested_min_confidence=suggest(thresholds, target=target, min_labels=min_labels),
        flip_rate=wilson(t.flips, t.matchups),
        position_bias=wilson(t.a_wins, t.judgments),
        judge_prefers_longer=wilson(t.chosen_longer, t.length_differs),
        human_prefers_longer=wilson(t.human_longer, t.human_length_n),
    )


async def calibration(
    session: AsyncSession,
    filters: PairFilters | None = None,
    *,
    target: float = DEFAULT_TARGET,
    min_labels: int = DEFAULT_MIN_LABELS,
) -> Calibration:
    """Each judge of the judged pairs matching ``filters``, against the human labels."""
    tallies, overall = await _tallies(session, filters or PairFilters())
    judges = [
        _judge(key, t, target=target, min_labels=min_labels) for key, t in sorted(tallies.items())
    ]
    thresholds = overall.thresholds()
    return Calibration(
        target=target,
        min_labels=min_labels,
        judges=judges,
        suggested_min_confidence=suggest(thresholds, target=target, min_labels=min_labels),
        overall=thresholds,
    )


async def stats_calibration(
    session: AsyncSession, filters: PairFilters, *, target: float = DEFAULT_TARGET
) -> PairStatsCalibration:
    """The labels and suggested ``min_confidence`` GET /pairs/stats shows. The confidence
    filter is ignored (the suggestion is about where to put it).

    The same figures as :func:`calibration`'s ``overall``, from the labels alone (one grouped
    read of ``pair_labels`` joined to their pairs): the per-judge flip, position and length
    figures it also computes would read every judgment of the selected jobs."""
    selection = dataclasses.replace(filters, min_confidence=None)
    overall = _Tally()
    for _job_id, confidence, preferred, _longer, n in await repo.label_counts(session, selection):
        overall.per_bucket[bucket_of(confidence)][preferred] += n
    return PairStatsCalibration(
        labels=overall.labels(),
        target=target,
        suggested_min_confidence=suggest(
            overall.thresholds(), target=target, min_labels=DEFAULT_MIN_LABELS
        ),
    )


# --- the review page ------------------------------------------------------------------------


async def stats_with_labels(session: AsyncSession, filters: PairFilters) -> PairStatsWithLabels:
    """GET /pairs/stats: the pair statistics of ``filters`` and what the human labels say."""
    stats = await pair_stats(session, filters)
    labels = await stats_calibration(session, filters)
    return PairStatsWithLabels(**dict(stats), human_labels=labels)


async def review_page(
    session: AsyncSession, filters: repo.ReviewFilters, *, limit: int, cursor: str | None
) -> tuple[Sequence[Any], str | None]:
    """A keyset page of the review list and the cursor of the next (None on the last page).
    Raises InvalidInput for a bad cursor."""
    rows = await repo.review_page(session, filters, after_id=decode_cursor(cursor), limit=limit + 1)
    page = rows[:limit]
    return page, encode_cursor(page[-1].id) if len(rows) > limit else None


@dataclass(frozen=True)
class PairView:
    pair: Any
    mine: LabelOut | None
    labels: PairLabels
    next_id: int | None


async def pair_view(session: AsyncSession, pair_id: int, *, reviewer: str) -> PairView:
    """A pair as the review page shows it: the pair, the reviewer's own label, everyone's
    labels and the next pair this reviewer has not labelled. Raises NotFound."""
    row = await repo.pair_for_review(session, pair_id)
    if row is None:
        raise NotFound(f"No pair with id {pair_id}.", pair_id=pair_id)
    mine = await repo.label_of(session, pair_id, reviewer)
    following = await repo.review_page(
        session, repo.ReviewFilters(labels="not_mine", reviewer=reviewer), after_id=pair_id, limit=1
    )
    return PairView(
        pair=row,
        mine=LabelOut.model_validate(mine) if mine is not None else None,
        labels=await pair_labels(session, pair_id),
        next_id=following[0].id if following else None,
    )
