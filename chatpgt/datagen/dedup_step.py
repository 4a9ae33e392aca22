"""A job's ``dedup`` option: near-duplicate essays of a topic are flagged before it is judged.

As soon as a topic's essays are in, its succeeded essays (in id order) are checked with the
MinHash-LSH index of ``chatpgt.pairs.near_duplicates``, after the topic's corpus essay when
``against_corpus``: an essay whose estimated similarity to the corpus essay or to an earlier
essay of the topic reaches the threshold is flagged (a ``near_duplicates`` row, as
``POST /pairs/dedup`` writes, sent through the flusher with the topic's other results) and left
out of the topic's judgments and pairs; the earliest essay of a group is kept. One topic holds
a few essays, so this is a few milliseconds of hashing; it is a pure function of the texts, so a
resumed run flags the same essays again.
"""

from __future__ import annotations

import logging
from typing import Any

from chatpgt.datagen.flusher import Flusher
from chatpgt.datagen.models import Generation
from chatpgt.datagen.planner import TopicState
from chatpgt.datagen.schemas import JobDedup
from chatpgt.db.base import utcnow
from chatpgt.pairs.near_duplicates import NearDuplicateIndex

log = logging.getLogger(__name__)


def near_duplicate_flags(
    job_id: int, options: JobDedup, topic: TopicState, essays: list[Generation]
) -> list[dict[str, Any]]:
    """The ``near_duplicates`` rows of the topic's ``essays`` (succeeded, with their texts)."""
    index = NearDuplicateIndex(options.threshold)
    if options.against_corpus and topic.reference_text:
        index.add_corpus(topic.topic_id, topic.reference_text)
    at = utcnow()
    return [
        {**flag.__dict__, "scanned_at": at}
        for g in sorted(essays, key=lambda g: g.id)
        if (flag := index.check(g.id, job_id, g.text or "")) is not None
    ]


def drop_near_duplicates(
    job_id: int,
    options: JobDedup | None,
    topic: TopicState,
    essays: list[Generation],
    flusher: Flusher,
) -> list[Generation]:
    """``essays`` without the near-duplicates (all of them when ``options`` is None); the flags
    go to the flusher."""
    if options is None or not essays:
        return essays
    flags = near_duplicate_flags(job_id, options, topic, essays)
    if not flags:
        return essays
    flusher.near_duplicates += flags
    flagged = {f["generation_id"] for f in flags}
    log.info(
        "job %s topic %s: %d near-duplicate essays left out of judging",
        job_id,
        topic.topic_id,
        len(flagged),
    )
    return [g for g in essays if g.id not in flagged]
