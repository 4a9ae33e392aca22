"""Where the demo's essays come from, in this order:

1. ``CHATPGT_DEMO_CORPUS`` when set: a local CSV file (``title`` and ``text`` columns), a JSONL
   file or a folder of ``.txt``/``.md`` essays, a local dataset directory (``save_to_disk``, or
   Parquet/CSV data files) or a Hugging Face dataset id. Given and unusable, the demo stops.
2. Else ``CHATPGT_DEMO_DATASET`` (``sgoel9/paul_graham_essays``) through ``datasets``, which caches
   it; offline (``HF_HUB_OFFLINE=1``, as ``make demo`` sets) only a cached copy loads, at once.
3. Else ``../shared/data/paul_graham_essays.csv`` next to this checkout, when it is there.
4. Else no corpus: the demo uses a few built-in titles, and says how to get the essays.

A corpus that is not already a CSV file is written to ``<work>/corpus.csv`` (``title,text``), the
one form the API reads for both the topic import and SFT.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatpgt.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SIBLING_CSV = ROOT.parent / "shared" / "data" / "paul_graham_essays.csv"
TITLE_COLUMN, TEXT_COLUMN = "title", "text"
BUILTIN_TITLES = [
    "How to Start a Startup",
    "Why Cities Matter",
    "The Hardest Lessons for Founders",
    "Taste and Judgment",
    "Doing Things That Don't Scale",
    "Writing Simply",
    "How to Think for Yourself",
    "The Value of Procrastination",
]


class CorpusUnavailable(Exception):
    """The corpus that was asked for cannot be loaded; ``str()`` says why, in one line."""


@dataclass(frozen=True)
class DemoCorpus:
    """A CSV of essays (``title``, ``text``), or None with the built-in titles."""

    csv_path: Path | None
    source: str
    # Why the earlier sources were passed over, and how to get the real corpus (built-in only).
    message: str | None = None


def resolve_corpus(
    settings: Settings, work_dir: Path, sibling_csv: Path = SIBLING_CSV
) -> DemoCorpus:
    """The demo's corpus (see the module's docstring). Raises CorpusUnavailable only for an
    explicit ``CHATPGT_DEMO_CORPUS`` that cannot be used."""
    if settings.demo_corpus:
        ref = settings.demo_corpus
        try:
            return DemoCorpus(_as_csv(ref, work_dir), f"CHATPGT_DEMO_CORPUS={ref}")
        except CorpusUnavailable as exc:
            raise CorpusUnavailable(f"CHATPGT_DEMO_CORPUS={ref}: {exc}") from exc
    skipped = []
    try:
        path = _write_csv(_dataset_rows(settings.demo_dataset), work_dir, settings.demo_dataset)
        return DemoCorpus(path, f"the dataset {settings.demo_dataset}")
    except CorpusUnavailable as exc:
        skipped.append(str(exc))
    if sibling_csv.is_file():
        # The expected case on a machine without the hub: say it as the choice it is.
        note = (
            f"the essays come from {sibling_csv} (the dataset {settings.demo_dataset} is not in "
            "the local cache; fetch it once with HF_HUB_OFFLINE=0 to use it instead)"
        )
        return DemoCorpus(sibling_csv, str(sibling_csv), message=note)
    skipped.append(f"no {sibling_csv}")
    message = (
        f"no corpus ({'; '.join(skipped)}); the demo uses {len(BUILTIN_TITLES)} built-in titles "
        "and skips SFT. To use the real essays, set CHATPGT_DEMO_CORPUS to a CSV file (title, "
        f"text) or a dataset, or run once online (HF_HUB_OFFLINE=0) so that `datasets` caches "
        f"{settings.demo_dataset}."
    )
    return DemoCorpus(None, "built-in titles", message=message)


def _as_csv(ref: str, work_dir: Path) -> Path:
    """A CSV file of ``ref``'s essays: the file itself when it is one, else one written."""
    local = Path(ref).expanduser()
    if local.is_file() and local.suffix.lower() == ".csv":
        return local.resolve()
    if local.exists() and not _is_dataset_dir(local):
        from chatpgt.training.corpus import load_essays
        from chatpgt.training.errors import CorpusUnreadable, TrainingDataError

        try:
            essays = load_essays(str(local))
        except (CorpusUnreadable, TrainingDataError) as exc:
            raise CorpusUnavailable(str(exc)) from exc
        rows = ({TITLE_COLUMN: e.title, TEXT_COLUMN: e.text} for e in essays)
        return _write_csv(rows, work_dir, ref)
    return _write_csv(_dataset_rows(ref), work_dir, ref)


def _is_dataset_dir(path: Path) -> bool:
    """A directory for ``datasets`` (``save_to_disk`` output, or data files such as Parquet or
    CSV) rather than a folder of ``.txt``/``.md`` essays."""
    if not path.is_dir():
        return False
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return True
    return not any(p.suffix.lower() in (".txt", ".md") for p in path.iterdir() if p.is_file())


def _dataset_rows(ref: str) -> Iterable[dict[str, Any]]:
    """The ``train`` split of a dataset: a local directory, or a hub id (from the cache when
    offline). Raises CorpusUnavailable."""
    import datasets

    datasets.disable_progress_bars()
    local = Path(ref).expanduser()
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded["train"]
        else:
            loaded = datasets.load_dataset(str(local) if local.is_dir() else ref, split="train")
    except Exception as exc:  # noqa: BLE001 - offline, no cache, not a dataset: all "unavailable"
        reason = " ".join(str(exc).split())[:300]
        raise CorpusUnavailable(f"cannot load the dataset {ref}: {reason}") from exc
    if not isinstance(loaded, datasets.Dataset):
        raise CorpusUnavailable(f"the dataset {ref} did not load as one split")
    missing = {TITLE_COLUMN, TEXT_COLUMN} - set(loaded.column_names)
    if missing:
        raise CorpusUnavailable(
            f"the dataset {ref} has no {' or '.join(sorted(missing))} column "
            f"(its columns: {', '.join(loaded.column_names)})"
        )
    return iter(loaded.select_columns([TITLE_COLUMN, TEXT_COLUMN]))


def _write_csv(rows: Iterable[dict[str, Any]], work_dir: Path, ref: str) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / "corpus.csv"
    partial = target.with_suffix(".csv.partial")
    count = 0
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([TITLE_COLUMN, TEXT_COLUMN])
        for row in rows:
            title, text = str(row[TITLE_COLUMN] or "").strip(), str(row[TEXT_COLUMN] or "")
            if title and text.strip():
                writer.writerow([title, text])
                count += 1
    if not count:
        partial.unlink()
        raise CorpusUnavailable(f"{ref} holds no essays with both a title and a text")
    partial.replace(target)
    return target
