"""Input the database cannot store, unknown query parameters and malformed bodies, through the
real API under uvicorn: each is a 4xx problem+json naming what was wrong, never a 500, and the
client's kept-alive connection goes on serving the requests after it."""

from __future__ import annotations

import http.client
import json
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api import problems
from api.inputs import declared_query_params
from api.main import create_app
from chatpgt.db.text import StoredText, _storable
from chatpgt.topics.schemas import TopicsCreate
from tests import factories

PROBLEM = "application/problem+json"
JOB = {
    "generators": [
        {"provider": "fake", "model": "writer-a"},
        {"provider": "fake", "model": "writer-b"},
    ],
    "judge": {"provider": "fake", "model": "judge"},
}


class Connection:
    """One HTTP/1.1 connection that never reopens itself: a request after the server closed it
    raises instead of silently dialling again."""

    def __init__(self, base: str) -> None:
        url = urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        self.conn.connect()
        self.conn.auto_open = 0

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, str, Any]:
        headers = {"Content-Type": content_type} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        answer = self.conn.getresponse()
        raw = answer.read()
        assert answer.getheader("connection", "").lower() != "close", (path, answer.status)
        ctype = answer.getheader("content-type", "")
        return answer.status, ctype, json.loads(raw) if "json" in ctype and raw else raw

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def conn(api_url: str) -> Iterator[Connection]:
    connection = Connection(api_url)
    yield connection
    connection.close()


# A lone surrogate is valid JSON; Python's reader turns it into a str asyncpg cannot encode.
# Written by hand: json.dumps would escape it the same way, but spelling it out shows the bytes.
SURROGATE_BODIES = [
    ("/topics", b'{"titles": ["On \\ud800 nothing"]}', ["body", "titles", 0]),
    (
        "/datagen/jobs",
        b'{"topics": {"titles": ["\\ud800"]}, ' + json.dumps(JOB).encode()[1:],
        ["body", "topics", "titles", 0],
    ),
    (
        "/datagen/jobs",
        b'{"topics": {"titles": ["On cats"]}, "prompt_templates": ["{title} \\udfff"], '
        + json.dumps(JOB).encode()[1:],
        ["body", "prompt_templates", 0],
    ),
    (
        "/datagen/jobs",
        b'{"topics": {"titles": ["On cats"]}, "system_prompt": "\\ud83d", '
        + json.dumps(JOB).encode()[1:],
        ["body", "system_prompt"],
    ),
    ("/train/sft", b'{"name": "run \\udc00"}', ["body", "name"]),
    ("/pairs/import", b'{"dataset": "\\ud800"}', ["body", "dataset"]),
]


@pytest.mark.parametrize(("path", "body", "loc"), SURROGATE_BODIES)
async def test_lone_surrogate_is_a_422_and_the_connection_keeps_working(
    clean_db: None, conn: Connection, path: str, body: bytes, loc: list[object]
) -> None:
    status, ctype, problem = conn.request("POST", path, body)
    assert status == 422, problem
    assert ctype == PROBLEM
    errors = {tuple(e["loc"]): e for e in problem["errors"]}
    assert tuple(loc) in errors, problem
    assert errors[tuple(loc)]["type"] == "string_surrogate"
    assert "lone surrogate" in errors[tuple(loc)]["msg"]
    # The same connection serves what comes next: a read, and a write that is stored.
    for _ in range(3):
        status, _, _ = conn.request("GET", "/healthz")
        assert status == 200
    status, _, created = conn.request("POST", "/topics", b'{"titles": ["On \\u00e9t\\u00e9"]}')
    assert status == 200, created
    assert created["topics"][0]["title"] == "On été"


async def test_a_surrogate_pair_is_one_character_and_is_stored(
    clean_db: None, conn: Connection
) -> None:
    """The rule refuses lone halves only: an escaped pair is an ordinary astral character."""
    status, _, created = conn.request("POST", "/topics", b'{"titles": ["On \\ud83d\\ude00"]}')
    assert status == 200, created
    assert created["topics"][0]["title"] == "On \U0001f600"


async def test_a_lone_surrogate_in_a_key_or_a_tag_is_a_422(conn: Connection) -> None:
    """Not only string values: a key (pydantic refuses the object that holds it) or the tag of a
    tagged union, which the error message may quote (then the answer is written escaped)."""
    for path, body in (
        ("/topics", b'{"titles": ["x"], "\\ud800": 1}'),
        ("/topics/import", b'{"source": "\\ud800", "path": "x"}'),
        ("/datagen/jobs", b'{"topics": {"titles": ["x"]}, "judge": {"method": "\\udbff"}}'),
    ):
        status, ctype, problem = conn.request("POST", path, body)
        assert status == 422 and ctype == PROBLEM, problem
        assert problem["errors"], problem
    assert conn.request("GET", "/healthz")[0] == 200


async def test_nul_in_a_form_field_of_the_review_page_is_a_422(conn: Connection) -> None:
    status, ctype, problem = conn.request(
        "POST", "/ui/login", b"key=a%00b", "application/x-www-form-urlencoded"
    )
    assert status == 422 and ctype == PROBLEM
    assert ["body", "key"] in [e["loc"] for e in problem["errors"]]


def test_stored_text_refuses_nul_and_lone_surrogates_only() -> None:
    for bad, kind in (
        ("a\x00", "string_nul"),
        ("\ud800", "string_surrogate"),
        ("x\udfffy", "string_surrogate"),
    ):
        with pytest.raises(ValidationError) as caught:
            TopicsCreate(titles=["fine", bad])
        (error,) = caught.value.errors()
        assert error["loc"] == ("titles", 1) and error["type"] == kind
    assert TopicsCreate(titles=["\U0001f600 ünïcödé", "ascii"]).titles[0] == "\U0001f600 ünïcödé"


def _texts_without_the_rule(tp: Any, where: str, meta: tuple[Any, ...] = ()) -> Iterator[str]:
    """Every ``str`` reachable in a request body type that is not a ``StoredText``."""
    origin = get_origin(tp)
    if origin is Annotated:
        yield from _texts_without_the_rule(get_args(tp)[0], where, (*meta, *tp.__metadata__))
    elif tp is str:
        if not any(isinstance(m, BeforeValidator) and m.func is _storable for m in meta):
            yield where
    elif origin in (Union, types.UnionType):
        for arg in get_args(tp):
            yield from _texts_without_the_rule(arg, where, meta)
    elif origin in (list, tuple, set, frozenset, dict):
        for arg in get_args(tp):
            if arg is not Ellipsis:
                yield from _texts_without_the_rule(arg, f"{where}[]")
    elif origin is Literal:
        return
    elif tp is Any:
        yield f"{where} (Any)"
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            yield from _texts_without_the_rule(
                field.annotation, f"{tp.__name__}.{name}", tuple(field.metadata)
            )


def test_every_text_field_of_every_request_body_is_stored_text() -> None:
    """The rule holds by construction: a new request field typed plain ``str`` fails here."""
    app = create_app()
    bodies = {
        route.path: route.body_field.field_info.annotation
        for route in _api_routes(app.routes)
        if route.body_field is not None
    }
    assert "/topics" in bodies and "/datagen/jobs" in bodies and "/train/rounds" in bodies
    plain = [f"{path}: {w}" for path, tp in bodies.items() for w in _texts_without_the_rule(tp, "")]
    assert plain == []
    assert _storable is get_args(StoredText)[1].func


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
        if included is not None:
            yield from _api_routes(included.routes)


def test_a_problem_quoting_unencodable_text_is_written_with_ascii_escapes() -> None:
    """Should a message ever quote a lone surrogate, the answer is still a 4xx with valid JSON."""
    answer = problems.problem(400, "unknown provider '\ud800'", provider="\udfff")
    assert answer.status_code == 400 and answer.media_type == PROBLEM
    body = json.loads(answer.body)
    assert body["detail"] == "unknown provider '\ud800'" and body["provider"] == "\udfff"
    assert json.loads(problems.problem(404, "été").body)["detail"] == "été"


# --- unknown query parameters ---------------------------------------------------------------


async def _one_pair(session: AsyncSession) -> int:
    job = await factories.job(session)
    topic = await factories.topic(session, "On the uses of boredom")
    a = await factories.generation(session, job, topic, "writer-a", "Boredom is a door.")
    b = await factories.generation(session, job, topic, "writer-b", "Boredom is bad.")
    await factories.judged_pair(session, a, b, 7.0, topic_title=topic.title)
    await session.commit()
    return job.id


def _assert_unknown(answer: httpx.Response, *names: str) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["unknown"] == sorted(names)
    for name in names:
        assert name in problem["detail"]
    return problem


async def test_a_typo_in_a_filter_is_a_400_not_every_pair(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    job_id = await _one_pair(session)
    other = job_id + 1000
    # The parameter spelled right filters; spelled wrong it used to be ignored (every pair).
    assert (await api.get("/pairs", params={"job_id": other})).json()["items"] == []
    assert len((await api.get("/pairs", params={"job_id": job_id})).json()["items"]) == 1
    problem = _assert_unknown(await api.get("/pairs", params={"jobid": other}), "jobid")
    assert "job_id" in problem["allowed"] and "limit" in problem["allowed"]
    _assert_unknown(await api.get("/pairs", params={"status": "bogus"}), "status")
    export = await api.get("/pairs/export", params={"jobid": 1})
    _assert_unknown(export, "jobid")
    assert b"chosen" not in export.content
    _assert_unknown(await api.get("/pairs/stats", params={"min_conf": 9, "x": ""}), "min_conf", "x")
    # Repeated and aliased parameters the route declares are fine.
    ok = await api.get(
        "/pairs/export", params=[("job_id", job_id), ("job_id", other), ("format", "csv")]
    )
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/csv")


async def test_every_route_refuses_an_unknown_query_parameter(
    api: httpx.AsyncClient, clean_db: None
) -> None:
    """One mechanism for all routes: every operation of the schema, the review page's too."""
    schema = (await api.get("/openapi.json")).json()
    seen = 0
    for path, operations in schema["paths"].items():
        for method in operations:
            url = path.replace("{", "").replace("}", "")
            url = "/".join(
                "1" if part.endswith("_id") or part == "name" else part for part in url.split("/")
            )
            answer = await api.request(method, url, params={"zz_typo": "1"})
            _assert_unknown(answer, "zz_typo")
            assert "400" in operations[method]["responses"], (method, path)
            seen += 1
    assert seen > 40
    for url in ("/ui/pairs", "/ui/login", "/ui/jobs", "/metrics"):
        _assert_unknown(await api.get(url, params={"zz_typo": "1"}), "zz_typo")


async def test_declared_query_parameters_still_reach_their_routes(
    api: httpx.AsyncClient, clean_db: None
) -> None:
    checks = [
        ("/topics", {"limit": 5, "q": "x", "source": "manual"}),
        ("/datagen/jobs", {"limit": 5, "status": "queued"}),
        ("/essays", {"limit": 5, "status": "succeeded"}),
        ("/pairs/stats", {"min_confidence": 1, "source": "judged", "dedup_threshold": 0.9}),
        ("/ui/pairs", {"kind": "judged", "q": "x", "labels": "", "flipped": ""}),
        ("/ui/login", {"next": "/ui/pairs"}),
        ("/ui/jobs", {}),
    ]
    for url, params in checks:
        answer = await api.get(url, params=params)
        assert answer.status_code == 200, (url, answer.text[:300])


def test_declared_parameters_include_those_of_dependencies() -> None:
    routes = {(r.path, frozenset(r.methods)): r for r in _api_routes(create_app().routes)}
    pairs = declared_query_params(routes["/pairs", frozenset({"GET"})])
    assert {
        "job_id",
        "model",
        "min_confidence",
        "source",
        "dedup_threshold",
        "limit",
        "cursor",
    } <= pairs
    export = declared_query_params(routes["/pairs/export", frozenset({"GET"})])
    assert "format" in export and "fmt" not in export


# --- bodies that are not readable JSON ------------------------------------------------------

UNREADABLE = [
    pytest.param(b'{"titles": ["On cats"]', "Expecting", id="truncated-json"),
    pytest.param(b'{"titles": [On cats]}', "Expecting value", id="not-json"),
    pytest.param(b'{"titles": ["On caf\xe9"]}', "not UTF-8", id="latin-1-bytes"),
    pytest.param(b'{"titles": ["\xff\xfe"]}', "not UTF-8", id="stray-bytes"),
    pytest.param(b"[" * 100_000, "nested too deeply", id="nested-too-deeply"),
]


@pytest.mark.parametrize(("body", "says"), UNREADABLE)
def test_malformed_json_and_bad_encodings_get_one_status(
    conn: Connection, body: bytes, says: str
) -> None:
    """One kind of mistake, one answer: 422, type json_invalid (non-UTF-8 bytes were a 400)."""
    for path in ("/topics", "/datagen/jobs"):
        status, ctype, problem = conn.request("POST", path, body)
        assert status == 422, problem
        assert ctype == PROBLEM
        assert problem["detail"] == "The request body is not readable JSON."
        (error,) = problem["errors"]
        assert error["type"] == "json_invalid" and error["loc"][0] == "body"
        assert says in error["msg"], error
    assert conn.request("GET", "/healthz")[0] == 200


# --- what the OpenAPI document states is what the server enforces ----------------------------


async def test_the_document_states_the_deployment_limits(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    params = {p["name"]: p["schema"] for p in schema["paths"]["/pairs"]["get"]["parameters"]}
    assert params["limit"]["maximum"] == 500  # CHATPGT_API_MAX_PAGE_SIZE's default
    cursor = next(b for b in params["cursor"]["anyOf"] if b.get("type") == "string")
    assert cursor["pattern"].startswith("^(?:aWQ6")
    titles = schema["components"]["schemas"]["TopicsCreate"]["properties"]["titles"]
    assert titles["maxItems"] == 10_000 and titles["items"]["pattern"]
    selection = schema["components"]["schemas"]["TopicSelection"]
    assert [b["required"] for b in selection["oneOf"]] == [["titles"], ["ids"], ["sample"]]
    for route in ("/train/runs", "/models", "/train/rounds", "/eval/runs", "/pairs/dedup"):
        answer = await api.get(route, params={"limit": 501})
        assert answer.status_code == 422, (route, answer.text)  # they clamped silently before


async def test_what_the_document_refuses_the_server_refuses(api: httpx.AsyncClient) -> None:
    job = {**JOB, "topics": {"titles": ["On cats"]}}
    refused = [
        ("/topics", {"titles": ["On cats", "+++"]}, ["body", "titles", 1]),
        ("/datagen/jobs", {**job, "topics": {"titles": ["---"]}}, ["body", "topics", "titles", 0]),
        ("/datagen/jobs", {**job, "topics": {"titles": ["x"], "sample": 2}}, ["body", "topics"]),
        ("/datagen/jobs", {**job, "topics": {"sample": True}}, ["body", "topics"]),
        ("/datagen/jobs", {**job, "budget_usd": True}, ["body"]),
        ("/train/sft", {"hyperparameters": {"epochs": True}}, ["body", "hyperparameters"]),
        ("/train/sft", {"hyperparameters": {"lora": {"merge": 1}}}, None),
        ("/train/sft", {"prompts": {"templates": ["{title} {x}"]}}, None),
    ]
    for path, body, loc in refused:
        answer = await api.post(path, json=body)
        assert answer.status_code == 422, (path, body, answer.text)
        if loc is not None:
            assert loc in [e["loc"] for e in answer.json()["errors"]], answer.text


async def test_a_405_lists_every_method_of_the_path(api: httpx.AsyncClient) -> None:
    answer = await api.request("OPTIONS", "/topics")
    assert answer.status_code == 405 and answer.headers["content-type"] == PROBLEM
    assert answer.headers["allow"] == "GET, POST"
    answer = await api.get("/pairs/import")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST", answer.text
