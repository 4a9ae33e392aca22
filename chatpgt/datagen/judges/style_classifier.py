"""``style_classifier``: no provider, no cost, no position. A style classifier
(:class:`chatpgt.style.judge.StyleJudge`: TF-IDF word 1–3-grams → logistic regression)
trained on the author's essays vs other writers' scores each essay alone; the higher P(author)
wins, the confidence (1–10) grows with the score gap, and the two orders of a matchup mirror each
other, so a flip is impossible (an exact tie of the scores stays a tie, never a default winner).

What it trains on, read from the database at the job run's first judgment:

- the author: every corpus topic's essay (``topics.reference_text`` of ``source = corpus``: the
  topics ``POST /topics/import`` made with a text column), of which StyleJudge takes its own
  seeded half;
- other writers: the succeeded candidate essays of the database's *other* jobs (up to
  ``MAX_OTHER``). The job's own essays are left out: they are what is judged, and the job's
  topics are judged as their essays come in, so which of them existed would depend on timing.

It is trained once per job run (one :class:`JudgeCall` per run) and cached per process by the
snapshot of those texts, so a resumed run or the next job on the same data does not train again.
With fewer than two corpus essays or other-writer essays every judgment fails with the reason.
This is never the evaluation's classifier (char + word n-grams on the SFT run's training essays).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from chatpgt.datagen import repository as repo
from chatpgt.datagen.judges import base
from chatpgt.datagen.judges.base import JudgeCall, JudgmentItem
from chatpgt.datagen.judging import MatchupResult, combine
from chatpgt.db.base import utcnow
from chatpgt.db.session import make_engine, make_sessionmaker, transaction
from chatpgt.settings import get_settings

if TYPE_CHECKING:  # scikit-learn stays out of the API process
    from chatpgt.style.judge import StyleJudge

MIN_CORPUS_ESSAYS = 2
MIN_OTHER_ESSAYS = 2
MAX_OTHER = 2000
CHUNK_WORDS = 250
SEED = 0
_RUNS_KEPT = 8  # job runs whose training this process remembers
_SNAPSHOTS_KEPT = 4  # trained classifiers kept


class NotTrainable(Exception):
    """Too little data to train the classifier: the judgments fail with this reason."""


# One training per job run (keyed by the run's JudgeCall) and one classifier per data snapshot.
_runs: OrderedDict[int, tuple[JudgeCall, asyncio.Future[StyleJudge]]] = OrderedDict()
_trained: OrderedDict[str, StyleJudge] = OrderedDict()


@base.register
class StyleClassifierJudge:
    name: ClassVar[str] = "style_classifier"
    needs_provider: ClassVar[bool] = False

    async def judge(
        self, call: JudgeCall, j: JudgmentItem, prompt: str, text_a: str, text_b: str
    ) -> dict[str, Any] | None:
        started = time.monotonic()
        update = base.blank_result(j)
        update["attempts"] = j.attempts + 1
        try:
            judge = await _judge_for(call, j.id)
        except NotTrainable as exc:
            update.update(status="failed", error=str(exc))
        else:
            v = await asyncio.to_thread(judge.verdict, text_a, text_b)
            update.update(
                status="succeeded",
                winner=v.winner,
                winner_generation_id=base.winner_id(j, v.winner),
                confidence=v.confidence,
                reasoning=v.reasoning,
                raw_answer=json.dumps(
                    {
                        "score_a": round(v.score_a, 6),
                        "score_b": round(v.score_b, 6),
                        "classifier": judge.describe(),
                    }
                ),
            )
        update.update(latency_ms=round((time.monotonic() - started) * 1000), finished_at=utcnow())
        return update

    def combine(self, first: JudgmentItem, second: JudgmentItem | None) -> MatchupResult:
        return combine(base.verdict(first), base.verdict(second) if second else None)


async def _judge_for(call: JudgeCall, judgment_id: int) -> StyleJudge:
    """The run's classifier: trained at its first judgment; the others wait for it."""
    entry = _runs.get(id(call))
    if entry is None or entry[0] is not call:
        future: asyncio.Future[StyleJudge] = asyncio.get_running_loop().create_future()
        _runs[id(call)] = (call, future)
        while len(_runs) > _RUNS_KEPT:
            _runs.popitem(last=False)
        try:
            future.set_result(await _train(judgment_id))
        except NotTrainable as exc:
            future.set_exception(exc)
        except BaseException as exc:  # a database outage: the next judgment tries again
            del _runs[id(call)]
            future.set_exception(NotTrainable(f"the style classifier could not be trained: {exc}"))
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        return future.result()
    return await asyncio.shield(entry[1])


async def load_training_data(judgment_id: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(corpus essays as (title, text), other writers' essays) for the judgment's job."""
    engine = make_engine(get_settings().database_url, pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as s:
            job_id = await repo.job_of_judgment(s, judgment_id)
            if job_id is None:
                raise NotTrainable(f"judgment {judgment_id} is not in the database")
            return await repo.corpus_essays(s), await repo.other_jobs_essays(s, job_id, MAX_OTHER)
    finally:
        await engine.dispose()


def snapshot_key(corpus: list[tuple[str, str]], other: list[str]) -> str:
    digest = hashlib.sha256()
    for title, text in corpus:
        digest.update(b"A\0" + title.encode() + b"\0" + text.encode() + b"\0")
    for text in other:
        digest.update(b"O\0" + text.encode() + b"\0")
    return digest.hexdigest()


def train_judge(corpus: list[tuple[str, str]], other: list[str]) -> StyleJudge:
    """StyleJudge on these texts (cached by their snapshot); NotTrainable when too few."""
    if len(corpus) < MIN_CORPUS_ESSAYS:
        raise NotTrainable(
            f"the style classifier judge needs at least {MIN_CORPUS_ESSAYS} corpus essays "
            f"(topics imported with their text: POST /topics/import with text_column); "
            f"the database has {len(corpus)}"
        )
    if len(other) < MIN_OTHER_ESSAYS:
        raise NotTrainable(
            f"the style classifier judge needs at least {MIN_OTHER_ESSAYS} other writers' "
            f"essays (succeeded candidate essays of other datagen jobs); the database has "
            f"{len(other)}: run a datagen job first"
        )
    key = snapshot_key(corpus, other)
    if key in _trained:
        _trained.move_to_end(key)
        return _trained[key]
    from chatpgt.style.classifier import NotEnoughTexts
    from chatpgt.style.judge import StyleJudge

    try:
        judge = StyleJudge.train(
            [_Titled(title, text) for title, text in corpus],
            other,
            seed=SEED,
            chunk_words=CHUNK_WORDS,
        )
    except NotEnoughTexts as exc:
        raise NotTrainable(f"the style classifier judge cannot be trained: {exc}") from None
    _trained[key] = judge
    while len(_trained) > _SNAPSHOTS_KEPT:
        _trained.popitem(last=False)
    return judge


async def _train(judgment_id: int) -> StyleJudge:
    corpus, other = await load_training_data(judgment_id)
    return await asyncio.to_thread(train_judge, corpus, other)


@dataclass(frozen=True, slots=True)
class _Titled:
    """A corpus essay as the style judge reads it (title and text)."""

    title: str
    text: str
