"""Requests and answers of the evaluation API. Pure pydantic: importable without torch."""

from __future__ import annotations

import string
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatpgt.db.ids import RowId
from chatpgt.db.requests import RequestModel
from chatpgt.db.text import RowIdOrText, StoredText
from chatpgt.training.schemas import TitleTemplate

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
DEFAULT_GENERATION_TEMPLATE = 'Write an essay titled "{title}".'


class GenerationSpec(RequestModel):
    """How each model writes an essay for each held-out title."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    template: TitleTemplate = DEFAULT_GENERATION_TEMPLATE
    max_new_tokens: int = Field(400, ge=1, le=8192)
    temperature: float = Field(0.7, gt=0, le=5)
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = 0

    @field_validator("template")
    @classmethod
    def _uses_title(cls, value: str) -> str:
        names = {n for _, n, _, _ in string.Formatter().parse(value) if n is not None}
        if names != {"title"}:
            raise ValueError("template must use {title} and nothing else")
        return value


class StyleSpec(RequestModel):
    """The style classifier: the SFT run's training essays vs other writers' essays."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    other_essays: StoredText | None = Field(
        None,
        max_length=1000,
        description="a local corpus (CSV/JSONL/.txt/.md or folder) of other writers' essays; "
        "default: the succeeded candidate essays in the database",
    )
    max_other: int = Field(2000, ge=2, le=100_000)
    max_author_chunks: int = Field(
        3000,
        ge=2,
        le=1_000_000,
        description="the author's training essays, cut into chunks, are sampled down to this "
        "many (seeded) so that training the classifier stays quick on a large corpus",
    )
    chunk_words: int = Field(250, ge=20, le=5000)
    folds: int = Field(5, ge=2, le=20)


class EvalJudgeSpec(RequestModel):
    """A pairwise judge through the provider pool (an API model or a local one)."""

    model_config = ConfigDict(extra="forbid")

    provider: StoredText = Field(min_length=1, max_length=64)
    model: StoredText = Field(min_length=1, max_length=1000)
    method: Literal["json", "ab_probability"] = "json"
    min_letter_mass: float = Field(0.1, ge=0, le=1)
    max_tokens: int = Field(512, ge=1, le=8000)


class EvalOptions(RequestModel):
    """What an evaluation measures and how, whatever the models: ``POST /eval/runs`` without
    ``models``, ``name`` and ``reference``; a rounds run's ``evaluation`` reuses it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sft_run: RowId | None = Field(
        None, description="the SFT run whose essay split defines the held-out essays"
    )
    max_essays: int | None = Field(
        None, ge=1, description="evaluate on the first N held-out essays only (quick runs)"
    )
    perplexity: bool = True
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    style: StyleSpec = Field(default_factory=StyleSpec)
    judge: EvalJudgeSpec | None = None
    controls: bool = Field(
        False,
        description="also measure two controls that every sound score ranks last: the first "
        "model's architecture with random weights, and the real essays' words shuffled",
    )
    fluency: bool = Field(
        True,
        description="perplexity of every model's generations under the first model (the base): "
        "the figure beside distinct-n and repetition that text without fluency cannot win",
    )
    bootstrap_samples: int = Field(1000, ge=50, le=100_000)
    seed: int = 0


class EvalRequest(EvalOptions):
    """``POST /eval/runs``.

    ``models``: registry ids (numbers), registered names, local model directories or hub ids;
    base, SFT and DPO of one lineage typically. The held-out essays are those of the lineage's
    SFT run split (or of ``sft_run``) that no model of the lineage trained on.
    """

    models: list[RowIdOrText] = Field(min_length=1, max_length=8)
    name: StoredText | None = Field(None, min_length=1, max_length=200)
    reference: StoredText = Field(
        "sft",
        max_length=1000,
        description='"sft": the SFT model of the list; "real": the real held-out essay; or '
        "one of the models as given in models",
    )


class EvalRunOut(BaseModel):
    id: int
    status: RunStatus
    name: str | None
    request: dict[str, Any]
    models: list[dict[str, Any]]
    heldout: dict[str, Any] = Field(description="the held-out essays and how they were chosen")
    progress: dict[str, Any]
    results: dict[str, Any] = Field(description="per-model metrics (the report's table)")
    artifacts: dict[str, Any] = Field(description="run_dir, report_json, report_html")
    attempts: int
    cancel_requested: bool
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None


class EvalRunPage(BaseModel):
    items: list[EvalRunOut]
    next_before: int | None = None
