"""The rounds request and the views the API returns. Pure pydantic: importable without torch."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatpgt.datagen.pairing import PairingRule
from chatpgt.datagen.schemas import GeneratorSpec, JudgeSpec, PromptTemplate, TopicSelection
from chatpgt.db.requests import RequestModel
from chatpgt.db.text import RowIdOrText, StoredText
from chatpgt.evaluation.schemas import EvalOptions
from chatpgt.evaluation.scores import METRICS, EvalMetric, unmeasured
from chatpgt.training.schemas import DPOHyperparameters, SampleSpec

# The most rounds one rounds run may ask for.
MAX_ROUNDS = 20

RoundsStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RoundStatus = Literal["generating", "training", "evaluating", "succeeded", "failed", "cancelled"]
StopReason = Literal["completed", "budget_exhausted", "no_improvement", "cancelled", "failed"]


class PolicySpec(RequestModel):
    """How the current model writes candidates: the ``local`` provider given the model's
    registry name (default), or a configured OpenAI-compatible provider (a vLLM server) that
    serves the current model under its registry name."""

    model_config = ConfigDict(extra="forbid")

    provider: StoredText = Field("local", min_length=1, max_length=64)
    samples_per_topic: int = Field(2, ge=1, le=16)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2000, ge=1, le=32_000)


class RoundsDPO(RequestModel):
    """The DPO run of each round (``POST /train/dpo``'s fields, without model and pairs)."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(6, ge=0, le=10)
    exclude_heldout: bool = True
    hyperparameters: DPOHyperparameters = Field(default_factory=DPOHyperparameters)
    samples: SampleSpec = Field(default_factory=SampleSpec)


def _state_measured_metric(schema: dict[str, Any], examples: list[dict[str, Any]]) -> None:
    # What _metric_is_measured enforces, in the OpenAPI document: the metric's stage is on
    # (style.enabled, perplexity) or, for the judge's metrics, a judge is given.
    def stage(name: str) -> list[str]:
        return [m for m, metric in METRICS.items() if metric.stage == name]

    schema["anyOf"] = [
        {
            "properties": {
                "metric": {"enum": stage("style")},
                "style": {"properties": {"enabled": {"const": True}}},
            }
        },
        {
            "required": ["metric"],
            "properties": {"metric": {"enum": stage("perplexity")}, "perplexity": {"const": True}},
        },
        {
            "required": ["metric", "judge"],
            "properties": {"metric": {"enum": stage("judge")}, "judge": {"type": "object"}},
        },
    ]
    schema["examples"] = examples


class RoundsEval(EvalOptions):
    """After each round's DPO run, an evaluation (``POST /eval/runs``' options, on the held-out
    essays of the lineage) of the round's model against the model it started from; the run
    stops once ``patience`` rounds in a row did not beat the best model so far on ``metric`` by
    at least ``min_improvement``."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra=lambda schema: _state_measured_metric(schema, RoundsEval.EXAMPLES),
    )
    EXAMPLES: ClassVar[list[dict[str, Any]]] = [
        {
            "metric": "style",
            "patience": 1,
            "min_improvement": 0.01,
            "max_essays": 20,
            "generation": {"max_new_tokens": 400},
        }
    ]

    metric: EvalMetric = Field(
        "style",
        description="style (higher is better), perplexity (lower), win_rate or "
        "length_controlled_win_rate (higher; vs the real held-out essay, needs judge)",
    )
    min_improvement: float = Field(
        0, ge=0, description="how much better than the best so far a round must score"
    )
    patience: int = Field(
        1, ge=1, le=MAX_ROUNDS, description="rounds in a row without improvement that stop it"
    )

    @model_validator(mode="after")
    def _metric_is_measured(self) -> RoundsEval:
        why = unmeasured(self.metric, self)
        if why is not None:
            raise ValueError(why)
        return self

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    def options(self) -> dict[str, Any]:
        """The fields of the evaluation request (``EvalRequest`` without models and name)."""
        return self.model_dump(mode="json", include=set(EvalOptions.model_fields))


class RoundsRequest(RequestModel):
    """``POST /train/rounds``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "SmolGraham",
                    "rounds": 3,
                    "topics": {"sample": 50, "seed": 1},
                    "judge": {"provider": "openai", "model": "gpt-4o"},
                    "budget_usd": 5.0,
                }
            ]
        },
    )

    model: RowIdOrText = Field(description="the SFT model to start from: registry id or name")
    rounds: int = Field(ge=1, le=MAX_ROUNDS)
    name: StoredText | None = Field(
        None,
        min_length=1,
        max_length=180,
        description="round n's model is registered as <name>-r<n> (default rounds-<id>)",
    )
    topics: TopicSelection
    policy: PolicySpec = Field(default_factory=PolicySpec)
    generators: list[GeneratorSpec] = Field(
        default_factory=list, max_length=15, description="extra generators, every round"
    )
    judge: JudgeSpec
    pairing: PairingRule = PairingRule.BEST_VS_WORST
    system_prompt: StoredText | None = Field(None, max_length=20_000)
    prompt_templates: list[PromptTemplate] | None = Field(None, min_length=1, max_length=32)
    max_failure_rate: float | None = Field(None, ge=0, le=1)
    accumulate: bool = Field(
        False, description="each round's DPO also trains on the earlier rounds' pairs"
    )
    budget_usd: float | None = Field(
        None, gt=0, le=1_000_000, description="over all rounds' datagen cost"
    )
    dpo: RoundsDPO = Field(default_factory=RoundsDPO)
    evaluation: RoundsEval | None = Field(
        None, description="evaluate each round's model; stop when it no longer improves"
    )


class RoundOut(BaseModel):
    number: int
    status: RoundStatus
    generator_model: dict[str, Any] = Field(description='{"id", "name"}: writes and DPO starts')
    datagen_job_id: int | None
    dpo_run_id: int | None
    model_id: int | None = Field(description="the model this round's DPO run registered")
    pairs: int = Field(description="pairs this round's datagen job produced")
    pairs_trained: int = Field(description="pairs its DPO run trained on")
    cost_usd: float
    eval_run_id: int | None = Field(description="the evaluation of this round's model")
    score: float | None = Field(description="this round's model's evaluation.metric")
    start_score: float | None = Field(
        description="the model it started from (generator_model), in the same eval run"
    )
    improved: bool | None = Field(
        description="it beat the best model so far by min_improvement (None: not evaluated)"
    )
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class RoundsRunOut(BaseModel):
    id: int
    status: RoundsStatus
    name: str
    request: dict[str, Any]
    start_model: dict[str, Any]
    stop_reason: StopReason | None
    cost_usd: float
    budget_usd: float | None
    rounds: list[RoundOut]
    model_id: int | None = Field(description="the last round's model")
    best_round: int | None = Field(
        description="with evaluation: the round whose model scored best (0: no round beat the "
        "start model); None without evaluation"
    )
    best_model_id: int | None = Field(description="that round's model (or the start model)")
    cancel_requested: bool
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RoundsRunPage(BaseModel):
    items: list[RoundsRunOut]
    next_before: int | None
