"""Importing preference pairs from a Hugging Face dataset as a job of their own.

Rows need ``prompt``, ``chosen`` and ``rejected``. ``prompt`` is a string (one user message) or a
list of messages ``[system?, user]``; ``chosen`` and ``rejected`` are strings or message lists
whose last message is the assistant's answer (TRL's conversational and standard formats). The
optional columns ``topic`` (else ``title``, else the user prompt), ``chosen_model``,
``rejected_model`` and ``confidence`` (1-10) are kept. Everything is read and checked before
anything is written: a bad row is a 400 naming it, and nothing is stored.

The job (status ``succeeded``, request ``{"import": {...}}``) gets a topic per distinct topic
(existing topics are reused), two generations per row (provider ``import``, the row's system and
user prompt, so the pair's messages are the dataset's) and a pair of source ``imported``: the
pairs are exported, counted and trained on like any other, and their prompt is the dataset's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datasets import repository as dataset_repo
from chatpgt.datasets.schemas import PairImport, PairImportResult
from chatpgt.errors import InvalidInput
from chatpgt.paths import DataRoots
from chatpgt.sources import load_split
from chatpgt.topics import repository as topics_repo
from chatpgt.topics.normalize import display_title, normalize_title

REQUIRED = ("prompt", "chosen", "rejected")
TITLE_CHARS = 300


@dataclass(frozen=True, slots=True)
class ImportedRow:
    title: str
    key: str  # the normalised title
    system_prompt: str | None
    prompt: str
    chosen: str
    rejected: str
    chosen_model: str
    rejected_model: str
    confidence: float


def load_rows(request: PairImport) -> list[dict[str, Any]]:
    """The rows of the dataset's split, at most ``request.limit`` (see ``load_split``)."""
    ds = load_split(request.dataset, request.split, request.config, request.limit)
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise InvalidInput(
            f"{request.dataset!r} lacks the column(s) {', '.join(missing)}; a preference "
            f"dataset has prompt, chosen and rejected (it has {', '.join(ds.column_names)}).",
            dataset=request.dataset,
        )
    return list(ds)


def _prompt(value: Any, row: int) -> tuple[str | None, str]:
    if isinstance(value, str):
        return None, value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        roles = [m.get("role") for m in value]
        contents = [m.get("content") for m in value]
        if roles in (["user"], ["system", "user"]) and all(isinstance(c, str) for c in contents):
            return (contents[0] if len(value) == 2 else None), contents[-1]
    raise InvalidInput(
        f"row {row}: prompt must be a string or messages [system?, user], not {str(value)[:200]}"
    )


def _answer(value: Any, row: int, column: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        last = value[-1]
        if last.get("role") == "assistant" and isinstance(last.get("content"), str):
            return str(last["content"])
    raise InvalidInput(
        f"row {row}: {column} must be a string or messages ending with the assistant's answer"
    )


def parse_rows(rows: list[dict[str, Any]], default_confidence: float) -> list[ImportedRow]:
    out = []
    for i, row in enumerate(rows):
        system, prompt = _prompt(row["prompt"], i)
        chosen, rejected = (
            _answer(row["chosen"], i, "chosen"),
            _answer(row["rejected"], i, "rejected"),
        )
        if not prompt.strip() or not chosen.strip() or not rejected.strip():
            raise InvalidInput(f"row {i}: prompt, chosen and rejected must not be blank")
        confidence = row.get("confidence")
        if confidence is None:
            confidence = default_confidence
        if not isinstance(confidence, int | float) or not 1 <= confidence <= 10:
            raise InvalidInput(f"row {i}: confidence must be a number from 1 to 10")
        title = display_title(str(row.get("topic") or row.get("title") or prompt))[:TITLE_CHARS]
        key = normalize_title(title)
        if not key:
            raise InvalidInput(f"row {i}: its topic (or prompt) has no letters or digits")
        out.append(
            ImportedRow(
                title=title,
                key=key,
                system_prompt=system,
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                chosen_model=str(row.get("chosen_model") or "imported"),
                rejected_model=str(row.get("rejected_model") or "imported"),
                confidence=float(confidence),
            )
        )
    return out


async def import_pairs(
    session: AsyncSession, request: PairImport, *, roots: DataRoots
) -> PairImportResult:
    """Read, check and store the dataset's pairs as a new job (in the caller's transaction)."""
    import anyio

    roots.check_source(request.dataset, field="dataset")
    raw = await anyio.to_thread.run_sync(load_rows, request)
    rows = parse_rows(raw, request.confidence)
    if not rows:
        raise InvalidInput(f"{request.dataset!r} has no rows in split {request.split!r}.")
    now = datetime.now(UTC)
    source = {
        "dataset": request.dataset,
        "split": request.split,
        "config": request.config,
        "rows": len(rows),
    }
    job_request = {"import": source}
    job_id = await dataset_repo.insert_import_job(
        session,
        request=job_request,
        request_hash=hashlib.sha256(json.dumps(job_request, sort_keys=True).encode()).hexdigest(),
        at=now,
    )
    titles: dict[str, topics_repo.NewTopic] = {}
    for row in rows:
        titles.setdefault(
            row.key, topics_repo.NewTopic(title=row.title, normalized_title=row.key, source="hf")
        )
    created = await topics_repo.insert_topics(session, list(titles.values()))
    stored = await topics_repo.topics_by_normalized_title(session, list(titles))
    row_topics = [stored[row.key].id for row in rows]
    first_prompt: dict[int, str] = {}
    for topic_id, row in zip(row_topics, rows, strict=True):
        first_prompt.setdefault(topic_id, row.prompt)
    await dataset_repo.insert_job_topics(
        session,
        [
            {"job_id": job_id, "topic_id": t, "template_index": 0, "prompt": p, "stage": "done"}
            for t, p in first_prompt.items()
        ],
    )
    reasoning = f"imported from {request.dataset}"
    for start in range(0, len(rows), 500):
        chunk = list(zip(row_topics[start : start + 500], rows[start : start + 500], strict=True))
        generations = []
        for offset, (topic_id, row) in enumerate(chunk):
            index = start + offset
            for role, text, model in (
                ("chosen", row.chosen, row.chosen_model),
                ("rejected", row.rejected, row.rejected_model),
            ):
                generations.append(
                    _generation(job_id, topic_id, index, role, text, model, row, now)
                )
        ids = await dataset_repo.insert_generations(session, generations)
        pairs: list[dict[str, Any]] = [
            {
                "job_id": job_id,
                "topic_id": topic_id,
                "source": "imported",
                "topic": row.title,
                "prompt": row.prompt,
                "chosen": row.chosen,
                "rejected": row.rejected,
                "chosen_model": row.chosen_model,
                "rejected_model": row.rejected_model,
                "chosen_generation_id": ids[2 * k],
                "rejected_generation_id": ids[2 * k + 1],
                "judgment_reasoning": reasoning,
                "confidence": row.confidence,
                "judge_model": None,
                "judgment_ids": [],
                "verdicts": [],
            }
            for k, (topic_id, row) in enumerate(chunk)
        ]
        await dataset_repo.insert_pairs(session, pairs)
    return PairImportResult(
        job_id=job_id, pairs=len(rows), topics=len(titles), topics_created=len(created)
    )


def _generation(
    job_id: int,
    topic_id: int,
    index: int,
    role: str,
    text: str,
    model: str,
    row: ImportedRow,
    now: datetime,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "topic_id": topic_id,
        "generator_key": f"import/{role}",
        "provider": "import",
        "model": model,
        "params": {},
        "sample_index": index,
        "system_prompt": row.system_prompt,
        "prompt": row.prompt,
        "text": text,
        "status": "succeeded",
        "attempts": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": Decimal(0),
        "finished_at": now,
    }
