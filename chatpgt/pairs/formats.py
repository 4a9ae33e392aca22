"""Pair rows in the shapes other tools read: TRL's conversational preference format, seed CSV."""

from __future__ import annotations

from typing import Any

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


def trl_record(prompt: str, chosen: str, rejected: str) -> dict[str, Any]:
    """One DPO row: the prompt as user messages, each answer as one assistant message."""
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
