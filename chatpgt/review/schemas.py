"""Labels and judge calibration as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chatpgt.db.requests import RequestModel
from chatpgt.db.text import StoredText
from chatpgt.pairs.schemas import PairStats

Choice = Literal["A", "B", "tie", "bad"]
ShownOrder = Literal["AB", "BA"]
Preferred = Literal["chosen", "rejected", "tie", "bad"]
# A note is a sentence or two for the other reviewers, not an essay.
NOTE_MAX_CHARS = 2000
DEFAULT_TARGET = 0.8
DEFAULT_MIN_LABELS = 5


class LabelIn(RequestModel):
    """``POST /pairs/{id}/labels``. ``choice`` is by position as the reviewer saw the pair:
    ``shown_order`` "AB" when the pair's chosen essay was shown as A (on the left), "BA" when
    its rejected essay was."""

    model_config = ConfigDict(extra="forbid")

    choice: Choice = Field(description="A or B (the better essay as shown), tie, or bad (pair)")
    shown_order: ShownOrder
    note: StoredText | None = Field(None, max_length=NOTE_MAX_CHARS)


class LabelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    pair_id: int
    reviewer: str = Field(description="the API key's name; 'local' when keys are not required")
    choice: Choice
    shown_order: ShownOrder
    preferred: Preferred = Field(
        description="the label in the pair's terms: chosen (agrees with the judge), rejected, "
        "tie or bad"
    )
    note: str | None
    created_at: datetime
    updated_at: datetime


class PairLabels(BaseModel):
    pair_id: int
    consensus: Preferred | None = Field(description="the reviewers' verdict (plurality rule)")
    items: list[LabelOut]


class Rate(BaseModel):
    """``hits`` of ``n`` with its 95% Wilson score interval (nulls when ``n`` is 0)."""

    n: int
    hits: int
    rate: float | None
    low: float | None
    high: float | None


class CalibrationBucket(BaseModel):
    bucket: int = Field(description="floor of the pair's confidence, 1-10")
    labels: int = Field(description="labels on pairs in this bucket (ties and bad pairs too)")
    ties: int
    bad: int
    agreement: Rate = Field(description="decisive labels (chosen/rejected) that agree")


class Threshold(BaseModel):
    min_confidence: int
    agreement: Rate = Field(description="decisive labels on pairs with confidence ≥ this")


class JudgeCalibration(BaseModel):
    provider: str
    model: str
    method: str
    pairs: int = Field(description="judged pairs of this judge")
    labels: int
    agreement: Rate = Field(description="all decisive labels")
    buckets: list[CalibrationBucket] = Field(description="buckets 1 to 10, all listed")
    thresholds: list[Threshold] = Field(description="min_confidence 1 to 10")
    suggested_min_confidence: int | None = Field(
        description="the lowest threshold whose agreement is ≥ target over ≥ min_labels "
        "decisive labels; null when none is"
    )
    flip_rate: Rate = Field(description="matchups (both orders judged) whose verdicts differ")
    position_bias: Rate = Field(description="succeeded judgments won by the essay shown as A")
    judge_prefers_longer: Rate = Field(
        description="judged pairs (lengths differ) whose chosen essay is the longer"
    )
    human_prefers_longer: Rate = Field(
        description="decisive labels (lengths differ) that prefer the longer essay"
    )


class Calibration(BaseModel):
    target: float
    min_labels: int
    judges: list[JudgeCalibration]
    suggested_min_confidence: int | None = Field(
        description="the same rule over the labels of every judge together"
    )
    overall: list[Threshold]


class PairStatsCalibration(BaseModel):
    """What GET /pairs/stats adds about the human labels of the selected jobs' pairs."""

    labels: int
    target: float
    suggested_min_confidence: int | None


class PairStatsWithLabels(PairStats):
    """GET /pairs/stats: the pair statistics and what the human labels say about them."""

    human_labels: PairStatsCalibration
