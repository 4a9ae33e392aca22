"""Which essays are held out for a lineage: the SFT run's eval split, minus anything another
model of the lineage trained on. API side (async, no torch)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.evaluation.errors import EmptyHeldOut, NoStoredSplit
from chatpgt.training import repository as training_repo
from chatpgt.training.schemas import (
    DEFAULT_CONTINUATION_TEMPLATE,
    DEFAULT_PROMPT_TEMPLATES,
    SFTRequest,
)


async def split_for_models(
    session: AsyncSession, model_ids: list[int], sft_run: int | None = None
) -> tuple[training_repo.SplitRun, list[training_repo.SplitRun]]:
    """(the SFT run whose split holds the essays out, every run of the lineage).

    Raises :class:`NoStoredSplit` when no SFT run of the lineage stored a split (or ``sft_run``
    is not such a run) and when the lineage holds several SFT splits and none was chosen.
    """
    runs = await training_repo.lineage_runs(session, model_ids)
    if sft_run is not None:
        chosen = await training_repo.training_run(session, sft_run)
        if chosen is None or chosen.kind != "sft" or not chosen.essay_split:
            raise NoStoredSplit(
                f"Training run {sft_run} is not an SFT run with a stored essay split.",
                sft_run=sft_run,
            )
        return chosen, runs
    splits = [r for r in runs if r.kind == "sft" and r.essay_split]
    if not splits:
        raise NoStoredSplit(
            "No SFT run in the lineage of these models stored an essay split (models given by "
            "path or hub id have no lineage; SFT runs from before the split was recorded have "
            "none), so no essay is known to be held out; pass sft_run.",
            models=model_ids,
        )
    if len({r.run_id for r in splits}) > 1:
        raise NoStoredSplit(
            "The models come from several SFT runs "
            f"({', '.join(str(r.run_id) for r in splits)}); pass sft_run to choose the split.",
            sft_runs=[r.run_id for r in splits],
        )
    return splits[0], runs


def _dpo_topics(run: training_repo.SplitRun) -> set[str]:
    """The topics of the pairs a DPO run trained on (its exported pairs file)."""
    run_dir = run.artifacts.get("run_dir")
    path = Path(run_dir) / "data" / "pairs.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return set()
    topics = set()
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                topics.add(str(json.loads(line).get("topic") or ""))
    return topics


async def heldout_set(
    session: AsyncSession,
    model_ids: list[int],
    *,
    sft_run: int | None,
    max_essays: int | None,
    untracked: list[str],
) -> dict[str, Any]:
    """The ``heldout`` record of an eval run; raises :class:`EmptyHeldOut` when nothing is left."""
    chosen, runs = await split_for_models(session, model_ids, sft_run)
    split = chosen.essay_split or {}
    trained: dict[str, str] = {}  # title -> the run that trained on it
    for run in runs:
        if run.run_id == chosen.run_id:
            continue
        if run.kind == "sft" and run.essay_split:
            for e in run.essay_split.get("train", []):
                trained.setdefault(e["title"], f"SFT run {run.run_id}")
        elif run.kind == "dpo":
            for topic in await asyncio.to_thread(_dpo_topics, run):
                trained.setdefault(topic, f"DPO run {run.run_id}")
    essays = [e for e in split.get("eval", []) if e["title"] not in trained]
    excluded = [
        {"title": e["title"], "trained_by": trained[e["title"]]}
        for e in split.get("eval", [])
        if e["title"] in trained
    ]
    if not essays:
        raise EmptyHeldOut(
            f"SFT run {chosen.run_id} held out {len(split.get('eval', []))} essay(s), and every "
            "one was trained on by another model of the lineage: nothing is left to evaluate on.",
            sft_run=chosen.run_id,
        )
    sft = SFTRequest.model_validate(chosen.request)
    templates = list(sft.prompts.templates or DEFAULT_PROMPT_TEMPLATES)
    drawn = _templates_drawn(split.get("eval", []), len(templates), sft.hyperparameters.split_seed)
    essays = [{**e, "template": drawn[e["title"]]} for e in essays]
    limited = essays[:max_essays] if max_essays else essays
    statement = (
        f"{len(limited)} held-out essay(s) of {split.get('corpus')!r}: the eval split of SFT run "
        f"{chosen.run_id} (seed {split.get('seed')}, fraction {split.get('eval_fraction')})"
        + (f", the first {len(limited)} of {len(essays)}" if len(limited) < len(essays) else "")
        + "; no model of the lineage trained on them"
        + (f" ({len(excluded)} more excluded: another model trained on them)" if excluded else "")
        + "."
        + (
            f" Not covered: {', '.join(untracked)} (given by path or hub id, no lineage here)."
            if untracked
            else ""
        )
    )
    return {
        "sft_run_id": chosen.run_id,
        "corpus": split.get("corpus"),
        "essays": limited,
        "titles": [e["title"] for e in limited],
        "available": len(essays),
        "excluded": excluded,
        "train": split.get("train", []),
        "examples": {
            "templates": templates,
            "system_prompt": sft.prompts.system_prompt,
            "continuation_template": sft.prompts.continuation_template
            or DEFAULT_CONTINUATION_TEMPLATE,
            "context_words": sft.prompts.continuation_context_words,
            "max_length": sft.hyperparameters.max_length,
            "seed": sft.hyperparameters.split_seed,
        },
        "statement": statement,
    }


def _templates_drawn(eval_essays: list[dict[str, Any]], n: int, seed: int) -> dict[str, int]:
    """title -> index of the prompt template SFT drew for each of its eval essays: one
    ``Random(seed)`` over the whole eval split in its order, as ``corpus.build_examples`` draws
    them, so a subset (``max_essays``, exclusions) keeps each essay's own template."""
    rng = random.Random(seed)
    return {e["title"]: rng.randrange(n) for e in eval_essays}
