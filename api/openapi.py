"""What this deployment enforces, stated in its live OpenAPI document.

Some limits are settings (the page size cap, topics per request), some are formats the library
checks (cursors): a static schema cannot say them, so the document served at /openapi.json is
completed here once, from the running settings. A client or a fuzzer that follows the document
is not refused (docs/fuzzing.md).
"""

from __future__ import annotations

from typing import Any

from chatpgt.db.keyset import CURSOR_PATTERN
from chatpgt.settings import Settings


def _string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``{"type": "string"}`` part of a parameter schema (``anyOf`` with null or plain)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            return branch
    return schema


def _integer_branch(schema: dict[str, Any]) -> dict[str, Any]:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "integer":
            return branch
    return schema


def state_deployment_limits(schema: dict[str, Any], settings: Settings) -> None:
    """Page sizes stop at ``api_max_page_size``, cursors have the form the API hands out, and
    ``POST /topics`` takes at most ``api_max_topics_per_request`` titles (more is a 413)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "query":
                    continue
                if parameter["name"] == "limit":
                    _integer_branch(parameter["schema"])["maximum"] = settings.api_max_page_size
                elif parameter["name"] == "cursor":
                    _string_branch(parameter["schema"])["pattern"] = CURSOR_PATTERN
    components = schema.get("components", {}).get("schemas", {})
    if "TopicsCreate" in components:
        titles = components["TopicsCreate"]["properties"]["titles"]
        titles["maxItems"] = settings.api_max_topics_per_request
