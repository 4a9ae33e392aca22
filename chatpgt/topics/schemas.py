"""Topics in and out of the API: creation, listing, imports from files and Hugging Face datasets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from chatpgt.db.requests import RequestModel
from chatpgt.db.text import STORABLE, StoredText
from chatpgt.topics.normalize import TITLE_DOCUMENTED, has_text

TopicSource = Literal["manual", "file", "hf", "corpus"]


def _has_text(title: str) -> str:
    if not has_text(title):
        raise PydanticCustomError(
            "title_blank", "A title must hold a letter or a digit (it is blank after normalisation)"
        )
    return title


Title = Annotated[
    str,
    STORABLE,
    AfterValidator(_has_text),
    WithJsonSchema({"type": "string", "pattern": TITLE_DOCUMENTED}),
]
"""A topic title as requests give it: storable text that holds a letter or a digit; the OpenAPI
document states the same rule as a pattern."""


class TopicsCreate(RequestModel):
    """Titles to add. Each must keep some text after normalisation (not blank, not only quotes)."""

    model_config = ConfigDict(extra="forbid")

    titles: list[Title] = Field(min_length=1, examples=[["The ethics of space mining"]])


class TopicRef(BaseModel):
    id: int
    title: str
    source: TopicSource


class TopicsCreated(BaseModel):
    """``topics`` holds one entry per distinct normalised title given, in the order first given,
    whether it was created now or existed; titles that normalise alike appear once."""

    created: int
    existing: int
    topics: list[TopicRef]


class TopicOut(TopicRef):
    has_reference_text: bool = Field(description="whether a real essay is stored (corpus topics)")
    created_at: datetime


class TopicPage(BaseModel):
    items: list[TopicOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class _ImportCommon(RequestModel):
    model_config = ConfigDict(extra="forbid")

    column: StoredText = Field("title", description="column holding the topic title")
    text_column: StoredText | None = Field(
        None, description="column holding the real essay; makes the topics corpus topics"
    )
    as_corpus: bool = Field(
        False, description="import as corpus topics; the essay column defaults to 'text'"
    )
    limit: int | None = Field(None, ge=1, description="read at most this many rows")

    def essay_column(self) -> str | None:
        """The column with the real essay, if this import carries one."""
        if self.text_column:
            return self.text_column
        return "text" if self.as_corpus else None


class FileImport(_ImportCommon):
    """A file readable by the API process: one title per line (txt) or a CSV with a header."""

    source: Literal["file"]
    path: StoredText = Field(min_length=1)
    format: Literal["txt", "csv"] | None = Field(
        None, description="guessed from the extension (.txt, .csv) when omitted"
    )


class HFImport(_ImportCommon):
    """A Hugging Face dataset: a hub name (needs the hub or its cache), or a local path (a
    directory written by ``save_to_disk``, or data files ``datasets.load_dataset`` can read)."""

    source: Literal["hf"]
    dataset: StoredText = Field(min_length=1)
    split: StoredText = "train"
    config: StoredText | None = Field(
        None, description="dataset configuration name, if it has several"
    )


TopicImport = Annotated[FileImport | HFImport, Field(discriminator="source")]


class ImportResult(BaseModel):
    """``rows`` = ``created`` + ``existing`` + ``duplicates`` + ``skipped``."""

    rows: int = Field(description="rows read")
    skipped: int = Field(description="rows with a blank title")
    duplicates: int = Field(description="rows repeating an earlier row's normalised title")
    created: int
    existing: int = Field(description="distinct titles that were already topics")
    reference_texts_added: int = Field(
        description="existing topics without an essay that received one from this import"
    )
