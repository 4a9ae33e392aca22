"""Enumerated query parameters of every list route are validated (issue 10): an unknown value
is a 422 problem+json naming the parameter, never a 200 with an empty list; OpenAPI lists the
choices."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

# (path, parameter, one allowed value)
ROUTES = [
    ("/essays", "status", "failed"),
    ("/judgments", "status", "succeeded"),
    ("/datagen/jobs", "status", "running"),
    ("/train/runs", "status", "queued"),
    ("/train/runs", "kind", "dpo"),
    ("/topics", "source", "corpus"),
    ("/pairs", "source", "judged"),
    ("/pairs/stats", "source", "corpus"),
    ("/pairs/export", "format", "csv"),
]


def _enum(schema: dict[str, Any], spec: dict[str, Any]) -> set[str]:
    """The allowed values of a parameter schema (through $ref, anyOf with null)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _enum(spec["components"]["schemas"][name], spec)
    if "enum" in schema:
        return set(schema["enum"])
    if "const" in schema:
        return {schema["const"]}
    found: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, []):
            found |= _enum(option, spec)
    return found


@pytest.fixture(scope="module")
async def openapi(api_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api_url) as client:
        return dict((await client.get("/openapi.json")).json())


@pytest.mark.parametrize(("path", "param", "allowed"), ROUTES)
async def test_an_unknown_value_is_a_422_problem(
    api: httpx.AsyncClient, openapi: dict[str, Any], path: str, param: str, allowed: str
) -> None:
    r = await api.get(path, params={param: "bogus"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(e["loc"] == ["query", param] for e in r.json()["errors"]), r.json()

    [spec] = [p for p in openapi["paths"][path]["get"]["parameters"] if p["name"] == param]
    choices = _enum(spec["schema"], openapi)
    assert allowed in choices and "bogus" not in choices

    ok = await api.get(path, params={param: allowed})
    assert ok.status_code == 200, ok.text


def test_the_job_schema_documents_its_outcome(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    view = schemas["DatagenJobView"]["properties"]
    assert _enum(view["outcome"], openapi) == {
        "produced",
        "produced_with_failures",
        "nothing_produced",
    }
    assert _enum(view["stop_reason"], openapi) == {
        "budget_exhausted",
        "cancelled",
        "max_failure_rate",
    }
    reason = schemas["FailureReason"]["properties"]
    assert set(reason) == {"stage", "provider", "model", "reason", "count"}
    rate = schemas["DatagenJobCreate"]["properties"]["max_failure_rate"]
    bounds = next(o for o in rate["anyOf"] if o.get("type") == "number")
    assert (bounds["minimum"], bounds["maximum"]) == (0, 1)
    assert {"json", "ab_probability"} <= set(schemas["JudgeSpec"]["properties"]["method"]["enum"])
