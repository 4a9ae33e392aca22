"""One number per model out of an eval run's results, and which way is better: the metrics a
caller can compare models on (a rounds run's ``evaluation.metric``). Pure Python.

The keys are those :func:`chatpgt.evaluation.runner.summary` writes for each model of
``results["models"]``: ``perplexity`` and ``style`` are bootstrap intervals (``value`` is the
point estimate); ``win_rate`` holds the judge's ``win_rate`` and
``length_controlled_win_rate`` intervals (absent when no matchup was judged, and
``{"reference": True}`` for the model that is the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from chatpgt.evaluation.schemas import EvalOptions

EvalMetric = Literal["style", "perplexity", "win_rate", "length_controlled_win_rate"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    higher_is_better: bool
    # the measurement that produces it: "style" (the classifier), "perplexity", "judge"
    stage: str
    # the keys, from a model's entry of results["models"], to the point estimate
    path: tuple[str, ...]


METRICS: dict[str, Metric] = {
    "style": Metric("style", True, "style", ("style", "value")),
    "perplexity": Metric("perplexity", False, "perplexity", ("perplexity", "value")),
    "win_rate": Metric("win_rate", True, "judge", ("win_rate", "win_rate", "value")),
    "length_controlled_win_rate": Metric(
        "length_controlled_win_rate",
        True,
        "judge",
        ("win_rate", "length_controlled_win_rate", "value"),
    ),
}


def unmeasured(metric: str, options: EvalOptions) -> str | None:
    """Why an evaluation with ``options`` would not measure ``metric``; None when it does."""
    stage = METRICS[metric].stage
    if stage == "style" and not options.style.enabled:
        return f"metric {metric!r} needs the style classifier: style.enabled is false"
    if stage == "perplexity" and not options.perplexity:
        return f"metric {metric!r} needs perplexity: perplexity is false"
    if stage == "judge" and options.judge is None:
        return f"metric {metric!r} needs a judge: give evaluation.judge"
    return None


def model_score(results: dict[str, Any], model_id: int, metric: str) -> float | None:
    """The point estimate of ``metric`` for the registered model ``model_id`` in an eval run's
    results; None when the run did not measure it (or it has no finite value)."""
    for entry in results.get("models") or []:
        if entry.get("model_id") != model_id:
            continue
        value: Any = entry
        for key in METRICS[metric].path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return None
    return None
