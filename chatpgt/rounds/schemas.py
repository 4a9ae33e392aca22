"""The rounds request and the views the API returns. Pure pydantic: importable without torch."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatpgt.datagen.pairing import PairingRule
from chatpgt.datagen.schemas import GeneratorSpec, JudgeSpec, TopicSelection
from chatpgt.db.ids import RowId
from chatpgt.training.schemas import DPOHyperparameters, SampleSpec

# The most rounds one rounds run may ask for.
MAX_ROUNDS = 20

RoundsStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RoundStatus = Literal["generating", "training", "succeeded", "failed", "cancelled"]
StopReason = Literal["completed", "budget_exhausted", "cancelled", "failed"]


class PolicySpec(BaseModel):
    """How the current model writes candidates: the ``local`` provider given the model's
    registry name (default), or a configured OpenAI-compatible provider (a vLLM server) that
    serves the current model under its registry name."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field("local", min_length=1, max_length=64)
    samples_per_topic: int = Field(2, ge=1, le=16)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2000, ge=1, le=32_000)


class RoundsDPO(BaseModel):
    """The DPO run of each round (``POST /train/dpo``'s fields, without model and pairs)."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(6, ge=0, le=10)
    exclude_heldout: bool = True
    hyperparameters: DPOHyperparameters = Field(default_factory=DPOHyperparameters)
    samples: SampleSpec = Field(default_factory=SampleSpec)


class RoundsRequest(BaseModel):
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

    model: RowId | str = Field(description="the SFT model to start from: registry id or name")
    rounds: int = Field(ge=1, le=MAX_ROUNDS)
    name: str | None = Field(
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
    system_prompt: str | None = Field(None, max_length=20_000)
    prompt_templates: list[str] | None = Field(None, min_length=1, max_length=32)
    max_failure_rate: float | None = Field(None, ge=0, le=1)
    accumulate: bool = Field(
        False, description="each round's DPO also trains on the earlier rounds' pairs"
    )
    budget_usd: float | None = Field(
        None, gt=0, le=1_000_000, description="over all rounds' datagen cost"
    )
    dpo: RoundsDPO = Field(default_factory=RoundsDPO)


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
    cancel_requested: bool
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RoundsRunPage(BaseModel):
    items: list[RoundsRunOut]
    next_before: int | None
