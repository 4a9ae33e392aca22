"""Where the demo's essays come from (chatpgt.demo_corpus), offline: each branch with real files
and real ``datasets`` directories made here."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest

from chatpgt.demo_corpus import BUILTIN_TITLES, CorpusUnavailable, resolve_corpus
from chatpgt.settings import Settings

ESSAYS = [
    {"title": "How to Do Great Work", "text": "Pick a field.\n\nWork hard at it.", "date": "2023"},
    {"title": "Cities", "text": "Great cities attract ambitious people.", "date": "2008"},
    {"title": "  ", "text": "A row without a title is left out.", "date": "2001"},
]
# Offline, a hub id that is not in the cache fails at once (HF_HUB_OFFLINE=1 for every test).
NOT_CACHED = "chatpgt-tests/no-such-dataset"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("CHATPGT_DEMO_CORPUS", raising=False)
    monkeypatch.delenv("CHATPGT_DEMO_DATASET", raising=False)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def expected_rows() -> list[dict[str, str]]:
    return [{"title": e["title"], "text": e["text"]} for e in ESSAYS if e["title"].strip()]


def saved_dataset(tmp_path: Path) -> Path:
    target = tmp_path / "saved"
    datasets.Dataset.from_list(ESSAYS).save_to_disk(str(target))
    return target


def parquet_dataset(tmp_path: Path) -> Path:
    target = tmp_path / "parquet" / "data"
    target.mkdir(parents=True)
    datasets.Dataset.from_list(ESSAYS).to_parquet(str(target / "train-00000-of-00001.parquet"))
    return target.parent


@pytest.mark.parametrize("make", [saved_dataset, parquet_dataset])
def test_the_dataset_branch_reads_a_dataset_and_writes_the_csv(
    tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    local = make(tmp_path)
    sibling = tmp_path / "sibling.csv"
    sibling.write_text("title,text\nSibling,not this one\n")
    work = tmp_path / "work"
    corpus = resolve_corpus(Settings(demo_dataset=str(local)), work, sibling_csv=sibling)
    assert corpus.csv_path == work / "corpus.csv"
    assert corpus.source == f"the dataset {local}" and corpus.message is None
    assert read_rows(corpus.csv_path) == expected_rows()


def test_the_sibling_file_when_the_dataset_is_not_cached(tmp_path: Path) -> None:
    sibling = tmp_path / "shared" / "data" / "paul_graham_essays.csv"
    sibling.parent.mkdir(parents=True)
    sibling.write_text("title,text\nCities,Great cities.\n")
    corpus = resolve_corpus(Settings(demo_dataset=NOT_CACHED), tmp_path / "w", sibling)
    assert corpus.csv_path == sibling and corpus.source == str(sibling)
    assert corpus.message is not None and NOT_CACHED in corpus.message
    assert not (tmp_path / "w" / "corpus.csv").exists()


def test_builtin_titles_with_a_message_that_says_how_to_get_the_corpus(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "paul_graham_essays.csv"
    corpus = resolve_corpus(Settings(demo_dataset=NOT_CACHED), tmp_path / "w", missing)
    assert corpus.csv_path is None and corpus.source == "built-in titles"
    message = corpus.message or ""
    assert f"{len(BUILTIN_TITLES)} built-in titles" in message
    assert "CHATPGT_DEMO_CORPUS" in message and "HF_HUB_OFFLINE=0" in message
    assert NOT_CACHED in message and str(missing) in message


def test_demo_corpus_setting_wins_and_takes_files_folders_and_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sibling = tmp_path / "sibling.csv"
    sibling.write_text("title,text\nSibling,not this one\n")
    own = tmp_path / "mine.csv"
    own.write_text("title,text\nMine,my essay\n")
    monkeypatch.setenv("CHATPGT_DEMO_CORPUS", str(own))
    settings = Settings()
    assert settings.demo_corpus == str(own)
    corpus = resolve_corpus(settings, tmp_path / "w", sibling)
    assert corpus.csv_path == own and corpus.source == f"CHATPGT_DEMO_CORPUS={own}"

    folder = tmp_path / "essays"
    folder.mkdir()
    (folder / "on_taste.txt").write_text("Taste is real.")
    (folder / "cities.md").write_text("# Why Cities Matter\nThey do.")
    corpus = resolve_corpus(Settings(demo_corpus=str(folder)), tmp_path / "w", sibling)
    assert corpus.csv_path is not None
    assert {r["title"] for r in read_rows(corpus.csv_path)} == {"on taste", "Why Cities Matter"}

    saved = saved_dataset(tmp_path)
    corpus = resolve_corpus(Settings(demo_corpus=str(saved)), tmp_path / "w2", sibling)
    assert corpus.csv_path is not None and read_rows(corpus.csv_path) == expected_rows()


def test_a_demo_corpus_that_cannot_be_used_stops_the_demo(tmp_path: Path) -> None:
    sibling = tmp_path / "sibling.csv"
    sibling.write_text("title,text\nSibling,not this one\n")
    with pytest.raises(CorpusUnavailable, match=NOT_CACHED):
        resolve_corpus(Settings(demo_corpus=NOT_CACHED), tmp_path / "w", sibling)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("")
    with pytest.raises(CorpusUnavailable, match="CHATPGT_DEMO_CORPUS"):
        resolve_corpus(Settings(demo_corpus=str(empty)), tmp_path / "w", sibling)
    no_text = tmp_path / "titles-only"
    datasets.Dataset.from_list([{"title": "A"}]).save_to_disk(str(no_text))
    with pytest.raises(CorpusUnavailable, match="no text column"):
        resolve_corpus(Settings(demo_corpus=str(no_text)), tmp_path / "w", sibling)
