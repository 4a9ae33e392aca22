"""Hugging Face formats: a ``datasets.save_to_disk`` folder with its card, and a push to the Hub.

Both start from an exported Parquet file (``GET /pairs/export?format=parquet``), so the rows are
the same in every format. ``datasets`` reads the Parquet file into a memory-mapped Arrow cache
and writes the folder from it: memory stays flat in the number of rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from chatpgt.errors import InvalidInput

Layout = Literal["parquet", "jsonl", "hf"]
# Where the data files lie relative to the card, per layout (the card's ``configs`` entry).
DATA_FILES: dict[str, str] = {
    "parquet": "data/train-*.parquet",
    "jsonl": "data/train-*.jsonl",
    "hf": "data-*.arrow",
}
DATA_FILE_NAMES: dict[str, str] = {
    "parquet": "data/train-00000-of-00001.parquet",
    "jsonl": "data/train-00000-of-00001.jsonl",
}


def check_target(out: Path) -> None:
    """``out`` must not exist, or be an empty directory."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} exists and is not an empty directory; nothing was written.")


def partial_dir(out: Path) -> Path:
    """A fresh directory next to ``out`` for building it (renamed onto ``out`` when done)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(
        tempfile.mkdtemp(prefix=f".{out.name}.", suffix=f".{os.getpid()}.partial", dir=out.parent)
    )


def publish(built: Path, out: Path) -> None:
    """Move the finished ``built`` directory onto ``out`` (an empty directory or nothing)."""
    if out.exists():
        out.rmdir()
    built.rename(out)


def save_hf_folder(parquet_path: Path, card: str, out: Path) -> int:
    """Write ``out`` as a ``datasets.save_to_disk`` folder of the rows of ``parquet_path`` with
    ``card`` as its ``README.md``; the number of rows. ``out`` appears whole or not at all."""
    import datasets

    check_target(out)
    built = partial_dir(out)
    try:
        with tempfile.TemporaryDirectory(dir=built.parent, prefix=f".{out.name}.cache.") as cache:
            dataset = datasets.Dataset.from_parquet(str(parquet_path), cache_dir=cache)
            assert isinstance(dataset, datasets.Dataset)
            folder = built / "dataset"
            dataset.save_to_disk(str(folder))
            rows = len(dataset)
            del dataset
        (folder / "README.md").write_text(card, encoding="utf-8")
        publish(folder, out)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return rows


def hub_token(token: str | None) -> str:
    """``token``, else the one ``huggingface_hub`` finds (``HF_TOKEN``, ``huggingface-cli
    login``); InvalidInput when there is none."""
    from huggingface_hub import get_token

    found = token or get_token()
    if not found:
        raise InvalidInput(
            "No Hugging Face token: pass --hf-token, set HF_TOKEN or run `hf auth login`; "
            "nothing was exported or uploaded."
        )
    return found


def push_to_hub(
    parquet_path: Path, card: str, repo_id: str, *, token: str, private: bool = True
) -> str:
    """Create (or reuse) the dataset repository ``repo_id`` and upload the Parquet file as
    ``data/train-00000-of-00001.parquet`` and ``card`` as ``README.md`` in one commit; the
    commit URL. The card's ``configs`` must point at ``DATA_FILES["parquet"]``."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.create_commit(
        repo_id,
        repo_type="dataset",
        operations=[
            CommitOperationAdd(DATA_FILE_NAMES["parquet"], str(parquet_path)),
            CommitOperationAdd("README.md", card.encode()),
        ],
        commit_message="ChatPGT preference pairs",
    )
    return str(commit.commit_url)
