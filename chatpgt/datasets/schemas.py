"""Requests and answers of the datasets routes (dedup scans, imports)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from chatpgt.db.ids import RowId
from chatpgt.pairs.schemas import DEFAULT_DEDUP_THRESHOLD as DEFAULT_THRESHOLD


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


class PairImport(BaseModel):
    """``POST /pairs/import``: a Hugging Face preference dataset (prompt/chosen/rejected): a hub
    name, or a local path the API can read (a ``save_to_disk`` folder, a Parquet or JSON(L)
    file, or a folder of data files)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=1000)
    split: str = Field("train", min_length=1, max_length=200)
    config: str | None = Field(None, max_length=200)
    limit: int | None = Field(None, ge=1, le=1_000_000)
    confidence: float = Field(
        10.0, ge=1, le=10, description="confidence of rows without a `confidence` column"
    )


class PairImportResult(BaseModel):
    job_id: int = Field(description="the job the pairs belong to")
    pairs: int
    topics: int = Field(description="distinct topics of the rows")
    topics_created: int = Field(description="of those, new topics")
