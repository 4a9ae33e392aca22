"""Requests and answers of the training API. Pure pydantic: importable without torch."""

from __future__ import annotations

import string
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from chatpgt.datagen.prompts import DEFAULT_PROMPT_TEMPLATES as DATAGEN_PROMPT_TEMPLATES
from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT
from chatpgt.db.ids import RowId
from chatpgt.db.requests import RequestModel
from chatpgt.db.text import STORABLE, RowIdOrText, StoredText

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM3-3B"
DEFAULT_CORPUS = "sgoel9/paul_graham_essays"

# The user prompts around an essay's title: datagen's (``chatpgt.datagen.prompts``), so that the SFT
# model is trained on the conversations it is later sampled and preference-tuned with; each essay
# gets one, chosen with the split seed. Override them per request with ``prompts.templates``.
DEFAULT_PROMPT_TEMPLATES = DATAGEN_PROMPT_TEMPLATES
# The prompt of the second and later parts of an essay that does not fit ``max_length``.
DEFAULT_CONTINUATION_TEMPLATE = (
    'Continue the essay titled "{title}" (part {part}). The previous part ended:\n\n{previous}'
)
DEFAULT_SAMPLE_PROMPTS = (
    'Write an essay titled "Why Cities Matter to Founders".',
    "Write a Paul Graham essay about the hardest lessons for first-time founders.",
    "Write an essay on the topic: What makes a question worth asking",
)

RunKind = Literal["sft", "dpo"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def template_pattern(required: str, *others: str) -> WithJsonSchema:
    """The OpenAPI statement of a ``str.format`` template that must use ``{required}`` and may
    use only ``others`` besides: text with doubled braces, and those fields (a conversion and a
    plain format spec allowed), ``{required}`` at least once."""
    text = r"(?:[^{}\x00]|\{\{|\}\})"
    spec = r"(?:![rsa])?(?::[^{}\x00]*)?\}"
    must = rf"\{{{required}{spec}"
    may = rf"\{{(?:{'|'.join((required, *others))}){spec}"
    return WithJsonSchema(
        {"type": "string", "pattern": f"^(?:{text}|{may})*{must}(?:{text}|{may})*$"}
    )


TitleTemplate = Annotated[str, STORABLE, template_pattern("title")]
"""A prompt template that uses ``{title}`` and nothing else (validated where it is used)."""


class LoraSpec(RequestModel):
    """LoRA through peft. The saved model is merged into full weights unless ``merge`` is false."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[StoredText] | Literal["all-linear"] = "all-linear"
    merge: bool = True


class TrainingKnobs(RequestModel):
    """Settings common to SFT and DPO."""

    # An infinite weight_decay or beta passes ge=0/gt=0 and then cannot be stored: the request is
    # JSONB, and JSON has no Infinity or NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: float = Field(gt=0, le=100)
    per_device_batch_size: int = Field(ge=1, le=1024)
    gradient_accumulation_steps: int = Field(ge=1, le=1024)
    learning_rate: float = Field(gt=0, le=1)
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "constant", "constant_with_warmup"
    ] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(2048, ge=32, le=131_072, description="tokens per training sequence")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (quick runs)")
    eval_fraction: float = Field(ge=0, lt=1)
    split_seed: int = 42
    seed: int = 42
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps (resume needs them)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept on disk")
    logging_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(
        None, ge=1, description="evaluate every N steps; None: per epoch"
    )
    gradient_checkpointing: bool | None = Field(
        None, description="None: on a GPU where the memory estimate needs it, off on CPU"
    )
    lora: LoraSpec | None = None
    num_processes: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="processes (one per GPU) the run trains on; None: CHATPGT_TRAIN_NUM_PROCESSES."
        " The global batch is per_device_batch_size x gradient_accumulation_steps x num_processes",
    )
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: a full replica per process; fsdp: parameters, gradients and optimizer "
        "state sharded across the processes (FSDP2), for models that do not fit one GPU",
    )


class SFTHyperparameters(TrainingKnobs):
    """Seed defaults: 2 epochs, effective batch 8 (2 x 4), lr 1e-5 cosine, warmup 0.03, 80/20."""

    epochs: float = Field(2, gt=0, le=100)
    per_device_batch_size: int = Field(2, ge=1, le=1024)
    gradient_accumulation_steps: int = Field(4, ge=1, le=1024)
    learning_rate: float = Field(1e-5, gt=0, le=1)
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="share of essays held out")


class DPOHyperparameters(TrainingKnobs):
    """Seed defaults: 1 epoch, batch 2, lr 5e-7, beta 0.1, sigmoid loss."""

    epochs: float = Field(1, gt=0, le=100)
    per_device_batch_size: int = Field(2, ge=1, le=1024)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    learning_rate: float = Field(5e-7, gt=0, le=1)
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "constant", "constant_with_warmup"
    ] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of pairs held out")
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "apo_zero"] = (
        "sigmoid"
    )
    precompute_ref_log_probs: bool | None = Field(
        None,
        description="None: precompute the reference log-probs for full fine-tuning; under LoRA the "
        "reference is the model with its adapter disabled. Never a second full copy.",
    )


class PromptSpec(RequestModel):
    """How essays become SFT conversations: the user prompt around a title, and the prompt of the
    continuation parts of an essay longer than ``max_length``."""

    model_config = ConfigDict(extra="forbid")

    templates: list[TitleTemplate] = Field(
        default_factory=lambda: list(DEFAULT_PROMPT_TEMPLATES), min_length=1, max_length=50
    )
    system_prompt: StoredText | None = Field(
        DEFAULT_SYSTEM_PROMPT,
        max_length=20_000,
        description="the system message of every training conversation; datagen's default, so "
        "SFT, datagen and DPO see the same conversation (null or empty: none). Set it to the "
        "datagen job's `system_prompt` when that job overrides it.",
    )
    continuation_template: Annotated[
        str, STORABLE, template_pattern("title", "part", "previous")
    ] = DEFAULT_CONTINUATION_TEMPLATE
    continuation_context_words: int = Field(
        30, ge=0, le=500, description="words of the previous part quoted in {previous}"
    )

    @field_validator("templates")
    @classmethod
    def _templates_use_title(cls, value: list[str]) -> list[str]:
        for template in value:
            names = _placeholders(template)
            if names != {"title"}:
                raise ValueError(f"template {template!r} must use {{title}} and nothing else")
        return value

    @field_validator("continuation_template")
    @classmethod
    def _continuation_placeholders(cls, value: str) -> str:
        names = _placeholders(value)
        if "title" not in names or not names <= {"title", "part", "previous"}:
            raise ValueError("continuation_template must use {title}, and only {part}, {previous}")
        return value


class SampleSpec(RequestModel):
    """Sample essays generated after training and stored on the run."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[StoredText] = Field(
        default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS), max_length=20
    )
    system_prompt: StoredText | None = Field(
        DEFAULT_SYSTEM_PROMPT, max_length=20_000, description="as in `prompts.system_prompt`"
    )
    max_new_tokens: int = Field(200, ge=1, le=8192)
    temperature: float = Field(0.7, gt=0, le=5)
    top_p: float = Field(0.9, gt=0, le=1)


class SFTRequest(BaseModel):
    """``POST /train/sft``.

    ``base_model`` is a Hugging Face id or a local directory; ``corpus`` a Hugging Face dataset id
    or a local CSV / JSONL file (columns ``title`` and ``text``) or folder of ``.txt``/``.md``
    essays. Local paths are checked when the run is submitted; a hub model id too when the hub is
    offline (``HF_HUB_OFFLINE=1``: it must be in the local cache), else when the worker loads it.
    """

    model_config = ConfigDict(extra="forbid")

    base_model: StoredText = Field(DEFAULT_BASE_MODEL, min_length=1, max_length=1000)
    corpus: StoredText = Field(DEFAULT_CORPUS, min_length=1, max_length=1000)
    name: StoredText | None = Field(
        None, min_length=1, max_length=200, description="registry name of the result"
    )
    hyperparameters: SFTHyperparameters = Field(default_factory=SFTHyperparameters)
    prompts: PromptSpec = Field(default_factory=PromptSpec)
    samples: SampleSpec = Field(default_factory=SampleSpec)


class PairSelection(RequestModel):
    """Which pairs DPO trains on (ties never become pairs)."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(6, ge=0, le=10)
    job_ids: list[RowId] = Field(default_factory=list, max_length=1000)
    source: Literal["judged", "corpus"] | None = None
    labels: Literal["ignore", "prefer"] = Field(
        "ignore",
        description="prefer: the reviewers' verdict overrides the judge (a pair they preferred "
        "the other way is trained reversed and kept whatever its confidence; one they called a "
        "tie or a bad pair is left out); ignore: labels play no part",
    )
    exclude_heldout: bool = Field(
        True,
        description="leave out pairs whose topic is a held-out essay of the starting model's SFT "
        "run (so that evaluating on those essays stays fair)",
    )


# What the service adds to a DPO run's stored request at submit time (chatpgt.training.service):
# how many pairs matched then, and the lineage's held-out topics to leave out.
SUBMIT_ANNOTATIONS = ("pairs_at_submit", "heldout_topics")


def as_submitted(request: dict[str, Any]) -> dict[str, Any]:
    """A stored run request without the service's annotations: what the user submitted, to
    validate again with :class:`SFTRequest` / :class:`DPORequest`."""
    return {k: v for k, v in request.items() if k not in SUBMIT_ANNOTATIONS}


class DPORequest(RequestModel):
    """``POST /train/dpo``. ``model`` is a finished SFT run id, a registered model name, or a
    local model directory (a Hugging Face id is also accepted; offline, only from the local
    cache)."""

    model_config = ConfigDict(extra="forbid")

    model: RowIdOrText
    pairs: PairSelection = Field(default_factory=PairSelection)
    name: StoredText | None = Field(None, min_length=1, max_length=200)
    hyperparameters: DPOHyperparameters = Field(default_factory=DPOHyperparameters)
    samples: SampleSpec = Field(default_factory=SampleSpec)


class Progress(BaseModel):
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    eta_s: float | None = None
    resumed_from_step: int | None = None
    train_tokens: int | None = Field(
        None, description="non-padding tokens trained on in this attempt (prompt and completion)"
    )
    train_tokens_per_s: float | None = Field(
        None,
        description="train_tokens over this attempt's wall time, held-out evaluation excluded",
    )
    stage: str | None = Field(
        None,
        description="what the run is doing: 'reference log-probs' (DPO, before its first step), "
        "'training', 'evaluating' (the held-out pass), 'saving the model and writing samples'",
    )
    eval_batches: int | None = Field(None, description="held-out batches done, while evaluating")
    eval_total: int | None = Field(None, description="held-out batches in the pass")
    pairs: int | None = Field(None, description="pairs whose reference log-probs are computed")


class Sample(BaseModel):
    prompt: str
    text: str


class EssaySplit(BaseModel):
    """Which essays an SFT run trained on and which it held out for evaluation (stored with the
    run, read by every evaluation of its lineage), summarised: the titles of the held-out ones,
    counts of both."""

    # Whatever else the run stored with its split (scalars such as the system prompt) shows too.
    model_config = ConfigDict(extra="allow")

    corpus: str | None = None
    seed: int | None = None
    eval_fraction: float | None = None
    essays: int | None = Field(None, description="essays in the corpus")
    train_essays: int
    eval_essays: int
    heldout_titles: list[str]


class TrainingRunOut(BaseModel):
    """A training run as the API shows it."""

    id: int
    kind: RunKind
    status: RunStatus
    name: str
    request: dict[str, Any]
    start_model: dict[str, Any]
    progress: Progress
    metrics: dict[str, Any] = Field(description='{"latest": {...}, "final": {...}}')
    examples: dict[str, int] = Field(description="train / eval examples used")
    data_report: dict[str, Any] = Field(
        description="what happened to the data: essays split into parts, pairs exported/truncated"
    )
    artifacts: dict[str, Any] = Field(
        description="run_dir, model_dir, tensorboard_dir, last_checkpoint"
    )
    essay_split: EssaySplit | None = Field(
        None, description="SFT: the essays held out by essay (None for DPO, or before it is made)"
    )
    samples: list[Sample]
    model_id: int | None = None
    attempts: int
    cancel_requested: bool
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None


class TrainingRunPage(BaseModel):
    items: list[TrainingRunOut]
    next_before: int | None = Field(None, description="pass as ?before= for the next page")


class LineageEntry(BaseModel):
    id: int
    name: str
    kind: str


class ModelOut(BaseModel):
    id: int
    name: str
    kind: str
    path: str
    parent_id: int | None
    run_id: int | None
    metrics: dict[str, Any]
    lineage: list[LineageEntry] = Field(description="root (base) first, this model last")
    created_at: datetime


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_after: int | None = None
