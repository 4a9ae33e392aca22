"""Row ids are Postgres bigints: an id from outside is checked against that range before any
query sees it (a larger integer is a validation error, not a database overflow)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_ID = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
