"""Rules every request obeys, whatever the route (app-wide dependencies, ``api.main``).

- Text Postgres cannot store (NUL, lone surrogates) is refused with a 422 naming the field, by
  one rule: ``chatpgt.db.text``. Body fields are ``StoredText`` in the request schemas, so
  pydantic answers for them; path and query parameters are checked here.
- A query parameter the route does not declare is a 400 naming it: a typo (``jobid`` for
  ``job_id``) must not widen a list or an export to every row.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

from chatpgt.db.text import unstorable
from chatpgt.errors import InvalidInput

# id(route) -> the query parameter names it declares (its own and its dependencies')
_DECLARED: dict[int, frozenset[str]] = {}


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


def _query_names(dependant: Any) -> set[str]:
    names: set[str] = set()
    for field in dependant.query_params:
        model = field.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):  # a query-parameter model
            names.update(f.alias or name for name, f in model.model_fields.items())
        else:
            names.add(field.alias)
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` reads: those of its endpoint and of its dependencies."""
    names = _DECLARED.get(id(route))
    if names is None:
        names = _DECLARED[id(route)] = frozenset(_query_names(route.dependant))
    return names


async def known_query_params(request: Request) -> None:
    """App-wide dependency: a 400 naming every query parameter the route does not declare."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = declared_query_params(route)
    unknown = sorted({name for name in request.query_params if name not in declared})
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        named = ", ".join(unknown[:20]) + (
            f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        )
        raise InvalidInput(
            f"Unknown query parameter(s): {named}. This route takes: {takes}.",
            unknown=unknown,
            allowed=sorted(declared),
        )
