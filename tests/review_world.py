"""A fixed set of pairs, judgments and labels whose calibration figures are worked out by hand
(tests/test_review_labels.py), and helpers shared by the review tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.pairs.models import Pair
from chatpgt.review import service
from chatpgt.review.schemas import LabelIn
from tests import factories, procs

JUDGE_1 = {"provider": "fake", "model": "judge", "method": "json"}
JUDGE_2 = {"provider": "fake", "model": "judge-2", "method": "ab_probability"}


@dataclass
class ReviewWorld:
    pairs: list[Pair] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)


# (confidence, chosen length, rejected length, labels as {reviewer: preferred})
JOB_1_PAIRS = [
    (9.0, 300, 200, {"r1": "chosen", "r2": "chosen"}),
    (8.5, 300, 200, {"r1": "chosen", "r2": "rejected"}),
    (7.0, 300, 200, {"r1": "rejected", "r2": "tie"}),
    (6.0, 200, 300, {"r1": "chosen", "r2": "bad"}),
    (3.5, 250, 250, {"r1": "rejected"}),
]
JOB_2_PAIRS = [(5.0, 100, 400, {"r1": "chosen"})]


def _choice(preferred: str, shown_order: str) -> str:
    """The click that means ``preferred`` when the pair was shown in ``shown_order``."""
    if preferred in ("tie", "bad"):
        return preferred
    chosen_at = "A" if shown_order == "AB" else "B"
    other = "B" if chosen_at == "A" else "A"
    return chosen_at if preferred == "chosen" else other


async def build(session: AsyncSession, *, with_labels: bool = True) -> ReviewWorld:
    world = ReviewWorld()
    for judge, specs, flips in ((JUDGE_1, JOB_1_PAIRS, 1), (JUDGE_2, JOB_2_PAIRS, 0)):
        job = await factories.job(session, request={"judge": judge})
        world.job_ids.append(job.id)
        for i, (confidence, chosen_len, rejected_len, labels) in enumerate(specs):
            title = f"Topic {job.id}-{i} on cities"
            topic = await factories.topic(session, title)
            chosen = await factories.generation(session, job, topic, "writer-a", "c" * chosen_len)
            rejected = await factories.generation(
                session, job, topic, "writer-b", "r" * rejected_len
            )
            # A/B: the chosen essay shown first and winning as A; B/A: winning as B.
            ab = await factories.judgment(
                session, chosen, rejected, "A", judge_model=judge["model"]
            )
            ba = await factories.judgment(
                session, rejected, chosen, "B", judge_model=judge["model"]
            )
            pair = await factories.judged_pair(
                session, chosen, rejected, confidence, topic_title=title, judgments=(ab, ba)
            )
            pair.judge_model = judge["model"]
            world.pairs.append(pair)
            for n, (reviewer, preferred) in enumerate(labels.items()):
                if with_labels:
                    order = "AB" if n % 2 == 0 else "BA"
                    await service.put_label(
                        session,
                        pair.id,
                        LabelIn(choice=_choice(preferred, order), shown_order=order),  # type: ignore[arg-type]
                        reviewer=reviewer,
                    )
        for k in range(flips):
            # A matchup the judge flipped on (A won both orders): no pair, one flip.
            topic = await factories.topic(session, f"Flipped {job.id}-{k}")
            x = await factories.generation(session, job, topic, "writer-a", "x" * 100)
            y = await factories.generation(session, job, topic, "writer-b", "y" * 100)
            await factories.judgment(session, x, y, "A", judge_model=judge["model"])
            await factories.judgment(session, y, x, "A", judge_model=judge["model"])
    await session.flush()
    return world


def secured_api(service_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """An API under uvicorn with keys required and no key cache (a revocation is seen at once);
    yields its base URL. For a module-scoped fixture of each review test module."""
    proc, base = procs.start_api(
        {**service_env, "CHATPGT_AUTH": "required", "CHATPGT_AUTH_CACHE_TTL_S": "0"}, log_dir
    )
    yield base
    proc.stop()
