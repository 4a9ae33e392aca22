"""Requests and answers of the datasets routes (dedup scans, imports)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from chatpgt.datasets.dedup import DEFAULT_THRESHOLD
from chatpgt.db.ids import RowId


class DedupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_ids: list[RowId] = Field(
        default_factory=list, max_length=1000, description="jobs to scan together; empty: all"
    )
    threshold: float = Field(
        DEFAULT_THRESHOLD,
        gt=0,
        le=1,
        description="estimated Jaccard similarity of word 3-shingles at which an essay is flagged",
    )


class DedupResult(BaseModel):
    job_ids: list[int]
    threshold: float
    essays: int = Field(description="essays scanned")
    corpus_essays: int = Field(description="corpus (reference) essays they were compared with")
    flagged: dict[str, int] = Field(description="flagged essays by kind: essay, corpus")
