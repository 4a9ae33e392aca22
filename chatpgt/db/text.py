"""Text from outside is checked against what Postgres can store before any query sees it.

Postgres ``text`` (and JSONB) cannot hold U+0000, and the driver cannot encode a lone surrogate
(``"\\ud800"`` is valid JSON, and Python's JSON reader turns it into a ``str`` no UTF-8 encoder
takes). Either one reaching a query is a database error, so every text field of a request is a
``StoredText``: the same rule everywhere, a validation error (the API's 422) naming the field.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from chatpgt.db.ids import RowId

NUL = "\x00"


def unstorable(text: str) -> tuple[str, str] | None:
    """``(error type, message)`` when Postgres cannot store ``text``, else None. The message never
    quotes the text itself (it could not be written into a UTF-8 answer either)."""
    if NUL in text:
        return "string_nul", "Text must not contain NUL (\\u0000)"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return (
            "string_surrogate",
            f"Text must not contain a lone surrogate (\\u{code:04x}) at position {exc.start}",
        )
    return None


def _storable(value: object) -> object:
    # Before pydantic's own string checks, so a lone surrogate gets this one error whatever
    # other constraints the field has (a constrained str would refuse it as "string_unicode").
    if isinstance(value, str) and (problem := unstorable(value)) is not None:
        raise PydanticCustomError(*problem)
    return value


STORABLE = BeforeValidator(_storable)
# What the OpenAPI document can say of it: no NUL (a lone surrogate is no JSON Schema string).
NO_NUL = r"^[^\x00]*$"
StoredText = Annotated[str, STORABLE, Field(json_schema_extra={"pattern": NO_NUL})]
"""A ``str`` Postgres can store: no NUL, no lone surrogate."""
RowIdOrText = Annotated[RowId | str, STORABLE]
"""A row id or a name (a model by registry id or name): the rule checks the text before the
union does, so its error names the field itself and not one of the union's branches."""
