"""Requests and answers of serving. Pure pydantic: importable without torch."""

from __future__ import annotations

import string
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chatpgt.db.text import StoredText
from chatpgt.review.schemas import Rate
from chatpgt.training.schemas import TitleTemplate

DEFAULT_TITLE_TEMPLATE = 'Write an essay titled "{title}".'
MAX_SAMPLES = 16


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: StoredText = Field(max_length=200_000)


def _title_or_messages_schema(schema: dict[str, Any]) -> None:
    # What _title_or_messages enforces, stated in the OpenAPI document.
    schema["oneOf"] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in ("title", "messages")
    ]


class GenerationCreate(BaseModel):
    """``POST /models/{id}/generations``: a ``title`` (asked with ``template``, and the system
    prompt the model was trained with, which its chat template renders by default) or the
    ``messages`` of a conversation (the model writes the next assistant turn); ``n`` samples."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra=_title_or_messages_schema
    )

    title: StoredText | None = Field(None, min_length=1, max_length=1000)
    template: TitleTemplate = Field(DEFAULT_TITLE_TEMPLATE, max_length=2000)
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=100)
    max_new_tokens: int = Field(400, ge=1, le=8192)
    temperature: float = Field(0.7, ge=0, le=5, description="0: greedy decoding")
    top_p: float = Field(0.9, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_SAMPLES, description="essays to sample")

    @field_validator("template")
    @classmethod
    def _uses_title(cls, value: str) -> str:
        names = {n for _, n, _, _ in string.Formatter().parse(value) if n is not None}
        if names != {"title"}:
            raise ValueError("template must use {title} and nothing else")
        return value

    @model_validator(mode="after")
    def _title_or_messages(self) -> Self:
        if (self.title is None) == (self.messages is None):
            raise ValueError("give either title or messages")
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        """What the model is asked: the messages, or the title in its template. No system
        message is added: the model's chat template renders the one it was trained with."""
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        assert self.title is not None
        return [{"role": "user", "content": self.template.format(title=self.title)}]


class GeneratedEssay(BaseModel):
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerationOut(BaseModel):
    id: int
    model_id: int
    model_name: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    request: dict[str, Any]
    results: list[GeneratedEssay]
    timings: dict[str, Any] = Field(description="load_s, generate_s, tokens_per_s, device")
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ModelRef(BaseModel):
    model_id: int
    name: str


class WinRateOut(BaseModel):
    """Blind playground votes between two models (``first`` has the lower id)."""

    first: ModelRef
    second: ModelRef
    first_wins: int
    second_wins: int
    ties: int
    first_win_rate: Rate = Field(
        description="first's wins over the decisive votes (ties left out) with its 95% Wilson "
        "interval; nulls when every vote was a tie"
    )


class WinRates(BaseModel):
    votes: int = Field(
        description="votes counted (ties included; a three-way vote is one vote that decides "
        "two pairs, or three when it is a tie)"
    )
    items: list[WinRateOut]


class PushResult(BaseModel):
    repo_id: str
    commit_url: str
    files: list[str]
