"""Row ids are Postgres bigints: an id from outside is checked against a range inside it before
any query sees it (a larger integer is a validation error, not a database overflow)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# Postgres' bigint ends at 2**63 - 1, but JSON readers that hold numbers as doubles (most
# OpenAPI validators and generators; I-JSON, RFC 7493) cannot tell 2**63 - 1 from 2**63 + 191:
# a document saying "maximum 9223372036854775807" lets them send what asyncpg cannot take. The
# bound is the largest integer every JSON reader holds exactly, far beyond any row count.
MAX_ID = 2**53 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
