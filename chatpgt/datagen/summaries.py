"""What a finished job comes to: its outcome, why it failed (if it did), its failure summary,
and the stored judge and cost summary of its work.

``outcome`` (issue 10): ``produced`` (at least one pair, no failed item), ``produced_with_
failures`` (at least one pair, some items failed), ``nothing_produced`` (no pair). A job whose
every generation or every judgment failed ends ``failed``, with ``error`` naming the first
failure; one stopped by its ``max_failure_rate`` ends ``failed`` with ``stop_reason =
"max_failure_rate"``, its unstarted items ``cancelled`` and everything done kept.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.db.session import transaction
from chatpgt.pairs.stats import job_work_totals

log = logging.getLogger(__name__)


class JobOutcome(StrEnum):
    PRODUCED = "produced"
    PRODUCED_WITH_FAILURES = "produced_with_failures"
    NOTHING_PRODUCED = "nothing_produced"


def outcome_of(counts: dict[str, Any]) -> JobOutcome:
    """The outcome of a terminal job from its counts (``repository.job_counts``)."""
    if not counts["pairs"]:
        return JobOutcome.NOTHING_PRODUCED
    failed = counts["generations"].get("failed", 0) + counts["judgments"].get("failed", 0)
    return JobOutcome.PRODUCED_WITH_FAILURES if failed else JobOutcome.PRODUCED


def failure_error(
    counts: dict[str, Any],
    first_error: str | None,
    *,
    budget_exhausted: bool,
    stopped_by_failure_rate: bool,
    max_failure_rate: float | None,
) -> str | None:
    """Why a job failed (None when it did not): over its failure rate, or no generation or no
    judgment succeeded (not for want of budget)."""
    gens, judgments = counts["generations"], counts["judgments"]
    first = f"; first error: {first_error}" if first_error else ""
    if stopped_by_failure_rate:
        failed = gens.get("failed", 0) + judgments.get("failed", 0)
        finished = failed + gens.get("succeeded", 0) + judgments.get("succeeded", 0)
        cancelled = gens.get("cancelled", 0) + judgments.get("cancelled", 0)
        return (
            f"stopped early: {failed} of {finished} finished items failed, over "
            f"max_failure_rate {max_failure_rate}; {cancelled} items cancelled{first}"
        )
    if budget_exhausted:
        return None
    if sum(gens.values()) and not gens.get("succeeded"):
        return f"no generation succeeded ({gens.get('failed', 0)} failed){first}"
    if judgments.get("failed") and not judgments.get("succeeded"):
        return f"no judgment succeeded ({judgments['failed']} failed){first}"
    return None


def budget_note(counts: dict[str, Any], limit: Any, spent: Any) -> str:
    skipped = counts["generations"].get("skipped", 0) + counts["judgments"].get("skipped", 0)
    return f"budget_usd {limit} reached (spent {spent:.6f}); {skipped} requests were not made"


async def store_work_summary(sm: async_sessionmaker[AsyncSession], job_id: int) -> None:
    """Store the finished job's judge and cost summary now, so that the first GET /pairs/stats
    after it does not scan the job's work. Best effort: a read computes a missing summary
    itself."""
    try:
        async with transaction(sm) as s:
            await job_work_totals(s, [job_id])
    except Exception:
        log.warning("job %s: its stats summary is left to the next read", job_id)
