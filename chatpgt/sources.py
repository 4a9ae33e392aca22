"""Loading one split of a Hugging Face dataset from wherever a user keeps it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatpgt.errors import InvalidInput

# Local files loaded by the ``datasets`` builder of their kind.
FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_split(ref: str, split: str, config: str | None = None, limit: int | None = None) -> Any:
    """Split ``split`` (at most ``limit`` rows) of ``ref``: a ``save_to_disk`` folder (a
    dataset or a dataset dict), a local Parquet/JSON(L)/CSV file (its only split), or anything
    ``datasets.load_dataset`` reads (a Hub name, a folder of data files). Any failure to load is
    InvalidInput naming the dataset."""
    import datasets

    datasets.disable_progress_bars()
    local = Path(ref)
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise InvalidInput(
                        f"{ref!r} has no split {split!r}; its splits are "
                        f"{', '.join(map(repr, loaded))}.",
                        dataset=ref,
                    )
                loaded = loaded[split]
            ds = loaded
        elif local.is_file() and local.suffix in FILE_BUILDERS:
            ds = datasets.load_dataset(
                FILE_BUILDERS[local.suffix], data_files=str(local), split="train"
            )
        else:
            ds = datasets.load_dataset(
                ref, config, split=f"{split}[:{limit}]" if limit is not None else split
            )
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to load a named dataset is bad input
        raise InvalidInput(
            f"Cannot load dataset {ref!r} (split {split!r}): "
            f"{type(exc).__name__}: {_clip(str(exc))}",
            dataset=ref,
        ) from None
    if not isinstance(ds, datasets.Dataset):
        raise InvalidInput(f"{ref!r} did not load as one split; name it with 'split'.", dataset=ref)
    if limit is not None and len(ds) > limit:
        ds = ds.select(range(limit))
    return ds
