"""What callers see of API keys: never the hash, and the secret only once, at creation."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chatpgt.db.text import StoredText

Scope = Literal["read", "write"]


class ApiKeyCreate(BaseModel):
    name: StoredText = Field(min_length=1, max_length=255, description="who or what the key is for")
    scope: Scope = "read"


class ApiKeyOut(BaseModel):
    """A key as listed: its id, name, scope and public prefix; no secret, no hash."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    scope: Scope
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A new key with its full secret, which exists nowhere else: show it once, then drop it."""

    key: SecretStr
