"""Pair rows in the shapes other tools read: TRL's conversational preference format, seed CSV."""

from __future__ import annotations

from typing import Any

from chatpgt.datagen.prompts import generation_messages

SEED_CSV_COLUMNS = (
    "topic",
    "prompt",
    "chosen",
    "rejected",
    "chosen_model",
    "rejected_model",
    "judgment_reasoning",
    "confidence",
    "human_label",  # the reviewers' verdict (chatpgt.pairs.consensus); empty when unlabelled
)


def trl_record(prompt: list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
    """One DPO row: the prompt as the exact messages the essays were generated with (system,
    if any, then user; see ``generation_messages``), each answer as one assistant message."""
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def prompt_messages(row: Any) -> list[dict[str, str]]:
    """The generation messages of a pair row carrying ``prompt`` and ``system_prompt`` (the
    system prompt of its rejected essay's generation: both essays of a pair share it)."""
    return generation_messages(row.prompt, row.system_prompt)
