"""The reviewers' verdict on a pair, as one SQL expression over its labels.

Several reviewers may label a pair; training and exports need one verdict. The rule, by
plurality of the labels' ``preferred``: "bad" when bad has at least as many votes as any other
verdict (in doubt, a pair reported unusable is left out); "chosen" or "rejected" when it has
strictly more votes than each of the other two; otherwise "tie". NULL for an unlabelled pair.

It lives with the pairs (it imports only their ORM models), so the pair repository and the
review service both use it without a cycle.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select

from chatpgt.pairs.labels import PairLabel
from chatpgt.pairs.models import Pair

VERDICTS = ("chosen", "rejected", "tie", "bad")
DECIDED = ("chosen", "rejected")  # verdicts that pick an essay


def _votes(verdict: str) -> ColumnElement[int]:
    return func.count().filter(PairLabel.preferred == verdict)


def consensus_of(pair_id: Any) -> ColumnElement[str | None]:
    """A scalar subquery: the reviewers' verdict on the pair whose id is ``pair_id`` (a column
    or a value), or NULL when nobody labelled it."""
    c, r, t, b = (_votes(v) for v in VERDICTS)
    verdict = case(
        (func.count() == 0, None),
        (and_(b >= c, b >= r, b >= t), "bad"),
        (and_(c > r, c > t), "chosen"),
        (and_(r > c, r > t), "rejected"),
        else_="tie",
    )
    return select(verdict).where(PairLabel.pair_id == pair_id).scalar_subquery()


def pair_consensus() -> ColumnElement[str | None]:
    """The reviewers' verdict on each row of ``pairs`` (correlated), labelled ``human_label``."""
    return consensus_of(Pair.id).label("human_label")
