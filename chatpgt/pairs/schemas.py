"""Pairs as the API shows them: one pair, a keyset page, and the statistics of a selection.

``PairOut`` and ``PairPage`` document the bodies of GET /pairs and GET /pairs/{id}; those bodies
are built straight from rows with orjson (see ``chatpgt.pairs.service``) and conform to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PairSource = Literal["judged", "corpus", "imported"]
ExportFormat = Literal["jsonl", "csv", "parquet"]
# Estimated Jaccard similarity (word 3-shingles) at which an essay is a near-duplicate
# (chatpgt.pairs.near_duplicates).
DEFAULT_DEDUP_THRESHOLD = 0.7


class VerdictOut(BaseModel):
    """One judgment behind a judged pair, in the order it was shown to the judge."""

    model_config = ConfigDict(extra="allow")

    judgment_id: int
    order: str = Field(description="'AB' when the chosen essay was shown first, else 'BA'")
    winner_generation_id: int | None
    confidence: int | None = Field(description="the judge's confidence, 1-10")
    reasoning: str | None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class PairOut(BaseModel):
    id: int
    job_id: int
    topic_id: int
    topic: str
    prompt: str = Field(description="the user prompt the essays answer")
    system_prompt: str | None = Field(description="the system prompt of the generations, if any")
    prompt_messages: list[ChatMessage] = Field(
        description="the exact messages both essays were generated with (system?, user): the "
        "export's `prompt`"
    )
    chosen: str
    rejected: str
    chosen_model: str = Field(description="'corpus' when the chosen essay is the real one")
    rejected_model: str
    judgment_reasoning: str
    confidence: float = Field(description="mean confidence of the two agreeing verdicts, 1-10")
    judge_model: str | None
    source: PairSource
    chosen_generation_id: int | None = Field(description="null for corpus pairs")
    rejected_generation_id: int
    judgment_ids: list[int] = Field(description="[A/B judgment, B/A judgment]; empty for corpus")
    verdicts: list[VerdictOut]
    created_at: datetime


class PairPage(BaseModel):
    items: list[PairOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class PairCounts(BaseModel):
    total: int
    judged: int
    corpus: int
    imported: int = Field(0, description="pairs imported from a dataset (POST /pairs/import)")


class ConfidenceBucket(BaseModel):
    bucket: int = Field(description="floor of the combined confidence, 1-10")
    count: int


class ModelRecord(BaseModel):
    model: str
    wins: int = Field(description="pairs where this model's essay is chosen")
    losses: int = Field(description="pairs where this model's essay is rejected")
    win_rate: float = Field(description="wins / (wins + losses)")


class Matchup(BaseModel):
    chosen_model: str
    rejected_model: str
    count: int


class LengthStats(BaseModel):
    """Essay lengths in characters."""

    mean: float
    median: float
    min: int
    max: int


class Lengths(BaseModel):
    chosen: LengthStats | None = Field(description="null when no pair matches")
    rejected: LengthStats | None


class JudgeConsistency(BaseModel):
    """How often the judge changed its mind when the two essays swapped places."""

    matchups: int = Field(description="matchups with both orders judged successfully")
    flips: int = Field(description="of those, matchups whose two verdicts named different winners")
    flip_rate: float | None = Field(description="flips / matchups; null without matchups")


class WorkCost(BaseModel):
    count: int
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    cache_hits: int = Field(0, description="answered from the response cache, at $0")
    saved_usd: float = Field(
        0.0,
        description="what the cache saved (the answers' first price) and what provider batches "
        "saved against online prices",
    )


class CostSummary(BaseModel):
    generations: WorkCost
    judgments: WorkCost
    total_cost_usd: float
    total_saved_usd: float = 0.0


class LengthBias(BaseModel):
    """Whether the chosen essay tends to be the longer one."""

    chosen_longer: int
    chosen_shorter: int
    equal_length: int
    chosen_longer_share: float | None = Field(
        description="chosen_longer / (chosen_longer + chosen_shorter); null when every pair is "
        "of equal length or none matches"
    )


class PositionBias(BaseModel):
    """Whether the judge favours the essay it was shown first (over every successful verdict
    of the jobs, both orders: an unbiased judge is near 0.5)."""

    a_wins: int = Field(description="verdicts for the essay shown first (A)")
    b_wins: int
    a_win_share: float | None = Field(description="a_wins / (a_wins + b_wins)")


class JobBias(BaseModel):
    job_id: int
    pairs: int
    length: LengthBias
    position: PositionBias
    models: list[ModelRecord] = Field(description="generator win rates in this job's pairs")


class DedupFigures(BaseModel):
    flagged_essays: dict[str, int] = Field(
        description="near-duplicate essays of the jobs by kind (essay: of another candidate; "
        "corpus: of the real essay), at or above `threshold` when one is given"
    )
    threshold: float | None = Field(description="the dedup threshold of the selection, if any")
    pairs_excluded: int = Field(description="pairs the threshold leaves out (0 without one)")


class BiasStats(BaseModel):
    length: LengthBias
    position: PositionBias
    per_job: list[JobBias] = Field(description="jobs with matching pairs, by id")


class PairStats(BaseModel):
    """Statistics of the pairs matching the filters. ``judge`` and ``cost`` describe the
    judgments and generations of the filtered jobs (all jobs without a job filter); the other
    filters (confidence, model, source) select pairs only."""

    counts: PairCounts
    confidence_histogram: list[ConfidenceBucket] = Field(description="buckets 1 to 10, all listed")
    models: list[ModelRecord] = Field(description="by wins, most first")
    matchups: list[Matchup] = Field(description="by count, most first")
    lengths: Lengths
    judge: JudgeConsistency
    cost: CostSummary
    bias: BiasStats
    dedup: DedupFigures
