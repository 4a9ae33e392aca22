"""The datagen job request and the views the API returns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from chatpgt.datagen.judges import method_names, needs_provider
from chatpgt.datagen.judges.base import BUILTIN_PROVIDER
from chatpgt.datagen.pairing import PairingRule
from chatpgt.datagen.summaries import JobOutcome
from chatpgt.db.ids import MAX_ID, RowId
from chatpgt.db.requests import RequestModel
from chatpgt.db.text import STORABLE, StoredText
from chatpgt.orchestration.status import ItemStatus, RunStatus
from chatpgt.pairs.schemas import DEFAULT_DEDUP_THRESHOLD
from chatpgt.topics.schemas import Title

JobStatus = RunStatus
WorkStatus = ItemStatus
StopReason = Literal["budget_exhausted", "cancelled", "max_failure_rate"]


def _exactly_one_selection(schema: dict[str, Any]) -> None:
    # What _exactly_one enforces, stated in the OpenAPI document: one of the three is given and
    # not null (null counts as not given).
    schema["oneOf"] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in ("titles", "ids", "sample")
    ]


class TopicSelection(RequestModel):
    """Exactly one way to pick topics: titles (created if new), ids, or a random sample."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_exactly_one_selection)

    titles: list[Title] | None = Field(None, min_length=1, max_length=10_000)
    ids: list[RowId] | None = Field(None, min_length=1, max_length=10_000)
    sample: int | None = Field(None, ge=1, le=10_000, description="sample N topics from the pool")
    seed: int | None = Field(None, description="random seed for sample")

    @model_validator(mode="after")
    def _exactly_one(self) -> TopicSelection:
        given = [x for x in (self.titles, self.ids, self.sample) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of titles, ids or sample")
        return self


def _has_title(template: str) -> str:
    if "{title}" not in template:
        raise ValueError("every prompt template must contain {title}")
    return template


PromptTemplate = Annotated[
    str,
    STORABLE,
    AfterValidator(_has_title),
    WithJsonSchema({"type": "string", "pattern": r"^[^\x00]*\{title\}[^\x00]*$"}),
]
"""A user prompt template: the topic's title goes where ``{title}`` stands (there must be one)."""


class GeneratorSpec(RequestModel):
    model_config = ConfigDict(extra="forbid")

    provider: StoredText = Field(min_length=1, max_length=64)
    model: StoredText = Field(min_length=1, max_length=255)
    samples_per_topic: int = Field(1, ge=1, le=16)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2000, ge=1, le=32_000)
    mode: Literal["online", "batch"] = Field(
        "online",
        description="batch: through the provider's Batch API (about half price, answers within "
        "its completion window; the job waits without holding a worker; docs/cost.md)",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_ID,  # what a JSON number holds exactly (2**53 - 1), as for ids
        description="sent as the request's seed (providers that honour it sample reproducibly); "
        "part of the response cache's key",
    )

    @property
    def key(self) -> str:
        """Identifies the generator inside a job (part of a generation's natural key)."""
        key = (
            f"{self.provider}/{self.model}|t={self.temperature:g}|p={self.top_p:g}"
            f"|m={self.max_tokens}"
        )
        return key if self.seed is None else f"{key}|s={self.seed}"

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            params["seed"] = self.seed
        if self.mode == "batch":
            params["mode"] = "batch"
        return params


def _state_builtin_judges(schema: dict[str, Any]) -> None:
    # What _builtin_judge enforces, in the OpenAPI document: a method that asks a provider,
    # or a built-in method with provider "builtin" and the method's name as model.
    asking = [m for m in method_names() if needs_provider(m)]
    schema["anyOf"] = [{"properties": {"method": {"enum": asking}}}] + [
        {
            "required": ["method"],
            "properties": {
                "method": {"const": m},
                "provider": {"const": BUILTIN_PROVIDER},
                "model": {"const": m},
            },
        }
        for m in method_names()
        if not needs_provider(m)
    ]


class JudgeSpec(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_state_builtin_judges)

    provider: StoredText = Field(
        min_length=1,
        max_length=64,
        description="required, but for style_classifier (no provider: rows name 'builtin')",
    )
    model: StoredText = Field(min_length=1, max_length=255)
    both_orders: bool = True
    method: StoredText = Field(
        "json",
        description="json: the judge writes {winner, reasoning, confidence}; ab_probability: the "
        "verdict and confidence come from the probabilities the judge gives to answering A or B "
        "(local models, or APIs that return logprobs); style_classifier: no provider, a "
        "classifier trained on the corpus topics' essays vs other writers ranks the two essays",
        json_schema_extra={"enum": list[Any](method_names())},
    )
    min_letter_mass: float = Field(
        0.1,
        ge=0,
        le=1,
        description="ab_probability: the least probability the judge must put on A or B at all; "
        "below it the judgment fails instead of reading a verdict from noise",
    )
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(512, ge=1, le=8_000)
    mode: Literal["online", "batch"] = Field(
        "online",
        description="batch: through the provider's Batch API (about half price, answers within "
        "its completion window; the job waits without holding a worker; docs/cost.md)",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        # The methods are the modules of chatpgt.datagen.judges.
        if value not in method_names():
            raise ValueError(f"method must be one of {', '.join(method_names())}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _builtin_judge(cls, data: Any) -> Any:
        """A method that asks no provider names none: its rows say provider 'builtin', model
        the method's name (a stored request, read back, carries exactly those)."""
        if not isinstance(data, dict):
            return data
        method = data.get("method", "json")
        if method not in method_names() or needs_provider(method):
            return data
        builtin = {"provider": BUILTIN_PROVIDER, "model": method}
        given = {k: data[k] for k in builtin if data.get(k) is not None}
        if any(given[k] != builtin[k] for k in given):
            raise ValueError(f"method {method} asks no provider: leave provider and model out")
        return {**data, **builtin}


class JobDedup(RequestModel):
    """``dedup`` of a job: as soon as a topic's essays are in, near-duplicates of each other
    (and of the topic's corpus essay) are flagged and neither judged nor paired."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        DEFAULT_DEDUP_THRESHOLD,
        gt=0,
        le=1,
        description="estimated Jaccard similarity of word 3-shingles at which an essay is flagged",
    )
    against_corpus: bool = Field(
        True, description="also flag essays that nearly copy the topic's corpus (real) essay"
    )


def _state_comparable(schema: dict[str, Any]) -> None:
    # What _comparable enforces, in the OpenAPI document: two candidates per topic at least (two
    # generators, one sampling twice, or the corpus essay), and no generator given twice.
    schema["anyOf"] = [
        {"properties": {"generators": {"minItems": 2}}},
        {
            "properties": {
                "generators": {
                    "contains": {
                        "required": ["samples_per_topic"],
                        "properties": {"samples_per_topic": {"minimum": 2}},
                    }
                }
            }
        },
        {
            "required": ["include_corpus_pairs"],
            "properties": {"include_corpus_pairs": {"const": True}},
        },
    ]
    schema["properties"]["generators"]["uniqueItems"] = True
    schema["examples"] = DATAGEN_JOB_EXAMPLES


DATAGEN_JOB_EXAMPLES: list[dict[str, Any]] = [
    {
        "topics": {"titles": ["On boredom", "On cities"]},
        "generators": [
            {"provider": "openai", "model": "gpt-4o-mini"},
            {"provider": "openai", "model": "gpt-4.1-mini"},
        ],
        "judge": {"provider": "openai", "model": "gpt-4o"},
        "budget_usd": 1.0,
    }
]


class DatagenJobCreate(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_state_comparable)

    topics: TopicSelection
    generators: list[GeneratorSpec] = Field(
        min_length=1,
        max_length=16,
        description="no two with the same provider, model, temperature, top_p and max_tokens "
        "(ask one for more samples_per_topic instead)",
    )
    judge: JudgeSpec
    pairing: PairingRule = PairingRule.BEST_VS_WORST
    include_corpus_pairs: bool = False
    corpus_pair_length: Literal["matched", "full"] = Field(
        "matched",
        description="corpus pairs: the real essay cut to the generated essay's length at a "
        "sentence end (matched: the pair teaches style, not length) or whole (full)",
    )
    budget_usd: float | None = Field(None, gt=0, le=1_000_000)
    system_prompt: StoredText | None = Field(None, max_length=20_000)
    prompt_templates: list[PromptTemplate] | None = Field(None, min_length=1, max_length=32)
    max_failure_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="stop the job early when more than this share of its finished generations "
        "and judgments failed (checked once CHATPGT_JOB_FAILURE_RATE_MIN_ITEMS have finished): "
        "the job ends failed with stop_reason max_failure_rate, its unstarted items cancelled, "
        "everything done kept",
    )
    dedup: JobDedup | None = Field(
        None,
        description="flag near-duplicate essays of each topic (MinHash-LSH) before judging: "
        "flagged essays are not judged nor paired (docs/datasets.md)",
    )
    batch_failures: Literal["next_batch", "online"] = Field(
        "next_batch",
        description="batch mode: a request that failed inside a provider batch (a server "
        "error) is asked again in the job's next batch, or online (at the online price)",
    )
    cache: bool = Field(
        True,
        description="answer a request from the response cache when the very same request "
        "(endpoint, model, messages, sampling parameters, seed, sample index) was answered "
        "before, in any job, at $0; false: ask the provider every time and keep nothing "
        "(docs/cost.md)",
    )

    @model_validator(mode="after")
    def _comparable(self) -> DatagenJobCreate:
        keys = [g.key for g in self.generators]
        if len(keys) != len(set(keys)):
            raise ValueError("two generators have the same provider, model and parameters")
        candidates = sum(g.samples_per_topic for g in self.generators)
        if candidates < 2 and not self.include_corpus_pairs:
            raise ValueError(
                "each topic needs at least two candidate essays to compare "
                "(raise samples_per_topic, add a generator, or set include_corpus_pairs)"
            )
        return self


class StageCounts(BaseModel):
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    pending: int = 0


class FailureReason(BaseModel):
    """One of a job's most common failure reasons."""

    stage: Literal["generation", "judgment"]
    provider: str
    model: str
    reason: str
    count: int


class BatchView(BaseModel):
    """One of a job's remote batches (its generators' or judge's ``"mode": "batch"``)."""

    id: int
    provider: str
    status: str = Field(
        description="submitting, the provider's while it works (validating, in_progress, "
        "finalizing, cancelling), done once its results are stored, abandoned when it never "
        "reached the provider"
    )
    remote_status: str | None = Field(
        description="the provider's last word: completed, failed, expired, cancelled, ..."
    )
    remote_batch_id: str | None
    remote_file_id: str | None
    requests: int
    counts: dict[str, Any] = Field(description="{total, completed, failed} as the provider said")
    error: str | None
    created_at: datetime


class DatagenJobView(BaseModel):
    id: int
    status: JobStatus
    outcome: JobOutcome | None = Field(
        None,
        description="null until the job is terminal: produced (at least one pair, no failed "
        "item), produced_with_failures (pairs, and some items failed), nothing_produced",
    )
    stop_reason: StopReason | None
    error: str | None
    failure_summary: list[FailureReason] = Field(
        default_factory=list,
        description="the most common reasons its items failed, most frequent first",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    topics: int
    generations: StageCounts
    judgments: StageCounts
    pairs: int
    ties: int
    near_duplicates: dict[str, int] = Field(
        default_factory=dict,
        description="its essays flagged as near-duplicates, by kind (essay, corpus): by the "
        "job's dedup option (those were not judged nor paired) or by POST /pairs/dedup",
    )
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cache_hits: int = Field(
        0, description="its essays and verdicts answered from the response cache, at $0"
    )
    saved_usd: float = Field(
        0.0, description="what those cached answers cost when they were bought"
    )
    budget_usd: float | None
    batches: list[BatchView] = Field(
        default_factory=list, description="its remote batches, oldest first"
    )
    errors: list[dict[str, Any]]
    request: dict[str, Any]


class DatagenJobPage(BaseModel):
    items: list[DatagenJobView]
    next_cursor: str | None


# --- the work of a job, as GET /essays and GET /judgments show it ---------------------------


class _WorkOut(BaseModel):
    status: WorkStatus
    attempts: int
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: int | None
    cache_hit: bool = Field(False, description="answered from the response cache, at $0")
    saved_usd: float = 0.0
    created_at: datetime
    finished_at: datetime | None


class EssayOut(_WorkOut):
    """One candidate essay (a generation row)."""

    id: int
    job_id: int
    topic_id: int
    generator_key: str
    provider: str
    model: str
    params: dict[str, Any]
    sample_index: int
    system_prompt: str | None
    prompt: str
    text: str | None = Field(description="null until the generation succeeded")
    finish_reason: str | None


class JudgmentOut(_WorkOut):
    """One verdict on an ordered pair: essay A is ``generation_a_id``, B ``generation_b_id``."""

    id: int
    job_id: int
    topic_id: int
    generation_a_id: int
    generation_b_id: int
    judge_provider: str
    judge_model: str
    winner: str | None = Field(description="'A' or 'B' as shown to the judge")
    winner_generation_id: int | None
    reasoning: str | None
    confidence: int | None
    raw_answer: str | None


class EssayPage(BaseModel):
    items: list[EssayOut]
    next_cursor: str | None


class JudgmentPage(BaseModel):
    items: list[JudgmentOut]
    next_cursor: str | None
