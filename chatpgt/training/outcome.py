"""How a training recipe ended. Torch-free, so the worker can read a launched run's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A merged LoRA run keeps its adapter here, beside ``model/`` in the run folder.
ADAPTER_DIR = "adapter"


@dataclass(slots=True)
class Outcome:
    """How a recipe ended: ``succeeded``, ``cancelled`` or ``lost`` (lease gone)."""

    status: str
    final_metrics: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
