"""Request paths (topic imports, training corpora and models) must lie in the API's data roots:
the rule itself, how the service picks its roots, and the 403 answers of the real app (in
process, over ASGI, against the test Postgres), which write nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.main import create_app
from chatpgt.paths import DataRoots
from chatpgt.settings import Settings
from chatpgt.topics.models import Topic
from chatpgt.training.models import TrainingRun

PROBLEM = "application/problem+json"


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "imports"
    root.mkdir()
    inside = root / "titles.txt"
    inside.write_text("Roots inside\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("Outside the roots\n")
    link = root / "escape.txt"
    link.symlink_to(outside)
    return {"root": root, "inside": inside, "outside": outside, "link": link}


def test_paths_resolve_before_the_check(layout: dict[str, Path]) -> None:
    roots = DataRoots.of([layout["root"]])
    assert roots.allows(str(layout["inside"]))
    assert roots.allows(str(layout["root"] / "not-yet-there.csv"))
    assert not roots.allows(str(layout["outside"]))
    # `..` and symlinks are followed before the comparison.
    assert not roots.allows(str(layout["root"] / ".." / "secret.txt"))
    assert not roots.allows(str(layout["link"]))
    # A sibling that merely starts with the root's name is not inside it.
    assert not roots.allows(str(layout["root"]) + "-evil/x.txt")
    assert not roots.allows("/proc/self/environ")
    assert DataRoots.unrestricted().allows("/proc/self/environ")


def test_hub_ids_are_not_local_paths(layout: dict[str, Path]) -> None:
    roots = DataRoots.of([layout["root"]])
    roots.check_source("sgoel9/paul_graham_essays", field="corpus")  # read from the Hub
    with pytest.raises(Exception, match="outside the directories"):
        roots.check_source(str(layout["outside"]), field="corpus")


def test_the_service_picks_its_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = Settings(artifacts_dir=tmp_path / "a", model_cache_dir=tmp_path / "m")
    assert DataRoots.for_service(base, open_to_loopback=True).roots is None
    reachable = DataRoots.for_service(base, open_to_loopback=False).roots
    assert reachable == ((tmp_path / "a").resolve(), (tmp_path / "m").resolve())
    monkeypatch.setenv("CHATPGT_DATA_ROOTS", f"{tmp_path / 'x'}, {tmp_path / 'y'}")
    chosen = Settings()
    assert chosen.data_roots == [tmp_path / "x", tmp_path / "y"]
    # Set roots apply even to an API open to loopback clients.
    assert DataRoots.for_service(chosen, open_to_loopback=True).roots == (
        (tmp_path / "x").resolve(),
        (tmp_path / "y").resolve(),
    )
    monkeypatch.setenv("CHATPGT_DATA_ROOTS", "")
    assert Settings().data_roots is None


@asynccontextmanager
async def app_client(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(**overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def count(session: AsyncSession, model: type[Any]) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def assert_forbidden(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert body["field"] == field and "CHATPGT_DATA_ROOTS" in body["detail"]


async def test_paths_outside_the_roots_are_403s_that_write_nothing(
    service_env: dict[str, str],
    clean_db: None,
    session: AsyncSession,
    layout: dict[str, Path],
    tmp_path: Path,
) -> None:
    model_outside = tmp_path / "model"
    model_outside.mkdir()
    (model_outside / "config.json").write_text("{}")
    async with app_client(data_roots=[layout["root"]], embedded_worker=False) as api:
        refused = [
            ("path", {"source": "file", "path": "/proc/self/environ", "format": "txt"}),
            ("path", {"source": "file", "path": str(layout["outside"])}),
            ("path", {"source": "file", "path": str(layout["link"])}),
            ("dataset", {"source": "hf", "dataset": str(tmp_path)}),
        ]
        for field, body in refused:
            assert_forbidden(await api.post("/topics/import", json=body), field)
        assert await count(session, Topic) == 0

        sft = {"base_model": str(model_outside), "corpus": str(layout["inside"])}
        assert_forbidden(await api.post("/train/sft", json=sft), "model")
        sft = {"base_model": "HuggingFaceTB/SmolLM3-3B", "corpus": str(layout["outside"])}
        assert_forbidden(await api.post("/train/sft", json=sft), "corpus")
        dpo = {"model": str(model_outside)}
        assert_forbidden(await api.post("/train/dpo", json=dpo), "model")
        assert await count(session, TrainingRun) == 0

        # Inside the roots the same request goes through.
        inside = {"source": "file", "path": str(layout["inside"])}
        answer = await api.post("/topics/import", json=inside)
        assert answer.status_code == 200, answer.text
        assert answer.json()["created"] == 1
