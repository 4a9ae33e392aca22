"""Topics through the real API: creation, normalised duplicates, listing, imports, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.errors import InvalidInput
from chatpgt.topics import service
from chatpgt.topics.models import Topic
from chatpgt.topics.normalize import normalize_title
from tests import factories

PROBLEM = "application/problem+json"


async def _topics(session: AsyncSession) -> list[tuple[str, str, str, str | None]]:
    rows = await session.execute(
        select(Topic.title, Topic.normalized_title, Topic.source, Topic.reference_text).order_by(
            Topic.id
        )
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Topic)) or 0)


def _assert_problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status
    return body


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("  Hello,   World! ", "hello, world"),
        ("«Hello World»", "hello world"),
        ("ＨＥＬＬＯ\u3000World", "hello world"),
        ('"Why do cats purr?"', "why do cats purr"),
        ("C++", "c++"),
        ("C#", "c#"),
        ("--- ", ""),
    ],
)
def test_normalize_title(title: str, expected: str) -> None:
    assert normalize_title(title) == expected


async def test_create_topics_ignores_normalised_duplicates(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await api.post("/topics", json={"titles": ["Space mining", "The sea"]})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["existing"]) == (2, 0)
    ids = {t["title"]: t["id"] for t in body["topics"]}

    again = await api.post(
        "/topics",
        json={"titles": ["  SPACE   mining!! ", "«Space mining»", "ｔｈｅ ｓｅａ", "Rivers"]},
    )
    assert again.status_code == 200, again.text
    body = again.json()
    assert (body["created"], body["existing"]) == (1, 2)
    # one entry per distinct normalised title, existing ones keep their id and stored title
    assert [(t["id"], t["title"]) for t in body["topics"][:2]] == [
        (ids["Space mining"], "Space mining"),
        (ids["The sea"], "The sea"),
    ]
    assert body["topics"][2]["title"] == "Rivers"
    assert all(t["source"] == "manual" for t in body["topics"])
    assert [r[1] for r in await _topics(session)] == ["space mining", "the sea", "rivers"]


@pytest.mark.parametrize(
    "payload",
    [
        {"titles": ["fine", "   "]},
        {"titles": ["fine", "?!"]},
        {"titles": []},
        {"titles": "not a list"},
        {},
    ],
)
async def test_create_topics_rejects_blank_titles(
    api: httpx.AsyncClient, session: AsyncSession, payload: dict[str, object]
) -> None:
    resp = await api.post("/topics", json=payload)
    _assert_problem(resp, 422)
    assert await _count(session) == 0


async def test_too_many_titles_is_413_and_writes_nothing(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    titles = [f"topic {i}" for i in range(10_001)]  # the default cap is 10,000
    body = _assert_problem(await api.post("/topics", json={"titles": titles}), 413)
    assert body["limit"] == 10_000
    assert await _count(session) == 0
    ok = await api.post("/topics", json={"titles": titles[:10_000]})
    assert ok.status_code == 200
    assert ok.json()["created"] == 10_000


async def test_list_topics_keyset_pages_and_filters(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    titles = [f"Essay topic number {i}" for i in range(7)]
    await api.post("/topics", json={"titles": titles})
    await factories.topic(session, "A corpus topic", source="corpus", reference_text="Real.")
    await session.commit()

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        resp = await api.get("/topics", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["items"]) <= 3
        seen += [t["title"] for t in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [*titles, "A corpus topic"]
    assert pages == 3

    corpus = (await api.get("/topics", params={"source": "corpus"})).json()["items"]
    assert [(t["title"], t["has_reference_text"]) for t in corpus] == [("A corpus topic", True)]
    found = (await api.get("/topics", params={"q": "NUMBER 3"})).json()["items"]
    assert [t["title"] for t in found] == ["Essay topic number 3"]
    none = (await api.get("/topics", params={"q": "100%"})).json()
    assert none == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [{"limit": 501}, {"limit": 0}, {"limit": "many"}, {"source": "nowhere"}],
)
async def test_list_topics_bad_parameters_are_422(
    api: httpx.AsyncClient, params: dict[str, object]
) -> None:
    _assert_problem(await api.get("/topics", params=params), 422)


@pytest.mark.parametrize("cursor", ["garbage", "aWQ6eA", "!!!"])
async def test_list_topics_bad_cursor_is_400(api: httpx.AsyncClient, cursor: str) -> None:
    _assert_problem(await api.get("/topics", params={"cursor": cursor}), 400)


async def test_import_txt_file(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    await factories.topic(session, "Old topic")
    await session.commit()
    path = tmp_path / "titles.txt"
    path.write_text("First title\n\n  old TOPIC.  \nSecond title\nfirst title!\n", "utf-8")
    resp = await api.post("/topics/import", json={"source": "file", "path": str(path)})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "rows": 5,
        "skipped": 1,
        "duplicates": 1,
        "created": 2,
        "existing": 1,
        "reference_texts_added": 0,
    }
    assert [(r[0], r[2]) for r in await _topics(session)] == [
        ("Old topic", "manual"),
        ("First title", "file"),
        ("Second title", "file"),
    ]


async def test_import_csv_corpus_keeps_essays(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    await factories.topic(session, "Existing, no essay")
    await factories.topic(session, "Kept essay", source="corpus", reference_text="Old essay.")
    await session.commit()
    essay = 'An essay, with commas,\n"quotes" and\nnew lines.'
    path = tmp_path / "corpus.data"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "body", "extra"])
        writer.writerow(["On tides", essay, "x"])
        writer.writerow(["existing, no essay", "Now it has one.", "y"])
        writer.writerow(["A title without essay", "", "z"])
        writer.writerow(["kept essay", "A newer essay.", "w"])
    resp = await api.post(
        "/topics/import",
        json={
            "source": "file",
            "path": str(path),
            "format": "csv",
            "column": "name",
            "text_column": "body",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 2
    assert resp.json()["reference_texts_added"] == 1
    rows = {r[0]: (r[2], r[3]) for r in await _topics(session)}
    assert rows == {
        "Existing, no essay": ("corpus", "Now it has one."),
        "Kept essay": ("corpus", "Old essay."),
        "On tides": ("corpus", essay),
        "A title without essay": ("file", None),
    }


async def test_import_as_corpus_defaults_essay_column_to_text(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    path = tmp_path / "corpus.csv"
    path.write_text("title,text\nLighthouses,The keeper climbs.\n", "utf-8")
    resp = await api.post(
        "/topics/import", json={"source": "file", "path": str(path), "as_corpus": True}
    )
    assert resp.status_code == 200, resp.text
    assert await _topics(session) == [
        ("Lighthouses", "lighthouses", "corpus", "The keeper climbs.")
    ]


def _bad_file_cases(tmp_path: Path) -> list[tuple[dict[str, object], str]]:
    good = tmp_path / "good.csv"
    good.write_text("title,text\nValid title,Essay\n", "utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    odd = tmp_path / "titles.json"
    odd.write_text("[]", "utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_text("", "utf-8")
    return [
        ({"path": str(tmp_path / "missing.txt")}, "No file"),
        ({"path": str(tmp_path)}, "directory"),
        ({"path": str(latin)}, "UTF-8"),
        ({"path": str(odd)}, "format"),
        ({"path": str(empty)}, "empty"),
        ({"path": str(good), "column": "headline"}, "'headline'"),
        ({"path": str(good), "text_column": "essay"}, "'essay'"),
        ({"path": str(good), "format": "txt", "as_corpus": True}, "txt"),
    ]


async def test_import_bad_files_are_400_and_write_nothing(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    for extra, needle in _bad_file_cases(tmp_path):
        resp = await api.post("/topics/import", json={"source": "file", **extra})
        body = _assert_problem(resp, 400)
        assert needle in str(body["detail"]), (extra, body)
    assert await _count(session) == 0


async def test_import_missing_column_names_the_columns(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "t.csv"
    path.write_text("headline,text\nA,B\n", "utf-8")
    resp = await api.post("/topics/import", json={"source": "file", "path": str(path)})
    body = _assert_problem(resp, 400)
    assert body["missing_columns"] == ["title"]
    assert body["columns"] == ["headline", "text"]


async def test_import_local_hf_dataset_saved_to_disk(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "title": ["Glaciers", "Deserts", "Glaciers!", "Cities"],
            "essay": ["Ice moves.", "Sand.", "Dup.", "Streets."],
        }
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    resp = await api.post(
        "/topics/import",
        json={"source": "hf", "dataset": str(tmp_path / "ds"), "text_column": "essay", "limit": 3},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["rows"] == 3
    assert resp.json()["duplicates"] == 1
    assert [(r[0], r[2], r[3]) for r in await _topics(session)] == [
        ("Glaciers", "corpus", "Ice moves."),
        ("Deserts", "corpus", "Sand."),
    ]


async def test_import_local_hf_data_files_directory(
    api: httpx.AsyncClient, session: AsyncSession, tmp_path: Path
) -> None:
    folder = tmp_path / "csvset"
    folder.mkdir()
    (folder / "train.csv").write_text("title\nVolcanoes\nForests\n", "utf-8")
    resp = await api.post("/topics/import", json={"source": "hf", "dataset": str(folder)})
    assert resp.status_code == 200, resp.text
    assert [(r[0], r[2]) for r in await _topics(session)] == [
        ("Volcanoes", "hf"),
        ("Forests", "hf"),
    ]
    missing = await api.post(
        "/topics/import", json={"source": "hf", "dataset": str(folder), "column": "name"}
    )
    assert "'name'" in str(_assert_problem(missing, 400)["detail"])


async def test_import_unreachable_hf_dataset_is_400(
    api: httpx.AsyncClient, session: AsyncSession
) -> None:
    # The API runs with HF_HUB_OFFLINE=1: a hub dataset that is not cached cannot load.
    resp = await api.post(
        "/topics/import", json={"source": "hf", "dataset": "no-such-owner/no-such-dataset-xyz"}
    )
    body = _assert_problem(resp, 400)
    assert "no-such-owner/no-such-dataset-xyz" in str(body["detail"])
    assert await _count(session) == 0


async def test_import_request_validation(api: httpx.AsyncClient) -> None:
    _assert_problem(await api.post("/topics/import", json={"source": "ftp", "path": "x"}), 422)
    _assert_problem(await api.post("/topics/import", json={"source": "file"}), 422)


async def test_resolve_topics_creates_titles_checks_ids_and_samples(
    session: AsyncSession,
) -> None:
    known = [await factories.topic(session, f"Pool topic {i}") for i in range(5)]
    await session.commit()
    ids = await service.resolve_topics(session, titles=["New one", "pool topic 0"])
    assert ids[1] == known[0].id
    assert len(ids) == 2
    with pytest.raises(InvalidInput) as err:
        await service.resolve_topics(session, ids=[known[1].id, 999_998, 999_999])
    assert err.value.extra["unknown_topic_ids"] == [999_998, 999_999]
    assert await service.resolve_topics(session, ids=[known[2].id, known[2].id]) == [known[2].id]
    assert await service.resolve_topics(session) == []

    drawn = await service.resolve_topics(session, ids=[known[0].id], sample=5, seed=7)
    assert drawn[0] == known[0].id
    assert len(set(drawn)) == 6  # the sample never repeats an id chosen otherwise
    with pytest.raises(InvalidInput):
        await service.resolve_topics(session, ids=[known[0].id], sample=6)


async def test_sample_topic_ids_is_repeatable_with_a_seed(session: AsyncSession) -> None:
    for i in range(40):
        await factories.topic(session, f"Sample topic {i}")
    await factories.topic(session, "Corpus one", source="corpus", reference_text="x")
    await session.commit()
    a = await service.sample_topic_ids(session, 10, seed=1)
    assert a == await service.sample_topic_ids(session, 10, seed=1)
    assert a != await service.sample_topic_ids(session, 10, seed=2)
    assert len(set(a)) == 10
    corpus = await service.sample_topic_ids(session, 1, source="corpus")
    assert len(corpus) == 1
    with pytest.raises(InvalidInput) as err:
        await service.sample_topic_ids(session, 2, source="corpus")
    assert err.value.extra["available"] == 1
