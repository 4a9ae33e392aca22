"""Rules every request obeys, whatever the route.

Text Postgres cannot store (NUL, lone surrogates) is refused with a 422 naming the field, by one
rule: ``chatpgt.db.text``. Body fields are ``StoredText`` in the request schemas, so pydantic
answers for them; path and query parameters are checked here, app-wide.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from chatpgt.db.text import unstorable


def unstorable_errors(
    fields: list[tuple[tuple[str | int, ...], str]],
) -> list[dict[str, object]]:
    """Validation errors (``loc``, ``msg``, ``type``) for the fields whose text cannot be stored."""
    errors: list[dict[str, object]] = []
    for loc, value in fields:
        problem = unstorable(value)
        if problem is not None:
            errors.append({"loc": loc, "msg": problem[1], "type": problem[0]})
    return errors


async def storable_params(request: Request) -> None:
    """App-wide dependency: a 422 naming every path or query parameter Postgres cannot store."""
    fields: list[tuple[tuple[str | int, ...], str]] = [
        (("path", name), str(value)) for name, value in request.path_params.items()
    ]
    fields += [(("query", name), value) for name, value in request.query_params.multi_items()]
    if errors := unstorable_errors(fields):
        raise RequestValidationError(errors)
