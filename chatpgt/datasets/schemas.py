"""Requests and answers of the datasets routes (dedup scans, imports)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from chatpgt.db.ids import RowId
from chatpgt.db.requests import RequestModel
from chatpgt.db.text import StoredText
from chatpgt.orchestration.status import RunStatus
from chatpgt.pairs.schemas import DEFAULT_DEDUP_THRESHOLD as DEFAULT_THRESHOLD


class DedupRequest(RequestModel):
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
    job_ids: list[int] = Field(description="the jobs scanned (every job's id when none given)")
    threshold: float
    essays: int = Field(description="essays scanned")
    corpus_essays: int = Field(description="corpus (reference) essays they were compared with")
    flagged: dict[str, int] = Field(description="flagged essays by kind: essay, corpus")


class DedupProgress(BaseModel):
    essays: int = Field(0, description="essays scanned so far")
    total: int | None = Field(
        None, description="succeeded essays of the jobs, counted when the scan started"
    )
    corpus_essays: int = Field(0, description="corpus essays indexed before the essays")


class DedupScanOut(BaseModel):
    """A near-duplicate scan (``POST /pairs/dedup``), queued and run by a datagen worker."""

    id: int
    status: RunStatus
    job_ids: list[int] = Field(description="the jobs as requested; empty: every job")
    threshold: float
    progress: DedupProgress
    result: DedupResult | None = Field(description="the counts, once the scan succeeded")
    error: str | None
    attempts: int = Field(description="workers that took the scan (more than 1: taken over)")
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None


class DedupScanPage(BaseModel):
    items: list[DedupScanOut]
    next_cursor: str | None


class PairImport(RequestModel):
    """``POST /pairs/import``: a Hugging Face preference dataset (prompt/chosen/rejected): a hub
    name, or a local path the API can read (a ``save_to_disk`` folder, a Parquet or JSON(L)
    file, or a folder of data files)."""

    model_config = ConfigDict(extra="forbid")

    dataset: StoredText = Field(min_length=1, max_length=1000)
    split: StoredText = Field("train", min_length=1, max_length=200)
    config: StoredText | None = Field(None, max_length=200)
    limit: int | None = Field(None, ge=1, le=1_000_000)
    confidence: float = Field(
        10.0, ge=1, le=10, description="confidence of rows without a `confidence` column"
    )


class PairImportResult(BaseModel):
    job_id: int = Field(description="the job the pairs belong to")
    pairs: int
    topics: int = Field(description="distinct topics of the rows")
    topics_created: int = Field(description="of those, new topics")
