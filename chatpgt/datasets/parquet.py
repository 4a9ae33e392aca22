"""Pairs as Parquet, written row group by row group to any byte sink (memory flat in the rows).

The columns are the JSONL export's: ``prompt``, ``chosen`` and ``rejected`` as lists of
``{role, content}`` messages (TRL's conversational preference format, which ``DPOTrainer`` and
``datasets.load_dataset("parquet", ...)`` read unchanged), then id, job id, topic, confidence
the two model names and the reviewers' verdict (``human_label``, null when unlabelled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema(
    [
        ("prompt", pa.list_(MESSAGE)),
        ("chosen", pa.list_(MESSAGE)),
        ("rejected", pa.list_(MESSAGE)),
        ("id", pa.int64()),
        ("job_id", pa.int64()),
        ("topic", pa.string()),
        ("confidence", pa.float64()),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("human_label", pa.string()),
    ]
)
# Rows per row group: ~20 MB of text at ~9 KB essays; what a reader holds in memory at once.
ROW_GROUP_ROWS = 1000


def hf_features() -> list[dict[str, Any]]:
    """``SCHEMA`` as the ``dataset_info.features`` of a Hugging Face dataset card."""
    dtypes = {pa.int64(): "int64", pa.float64(): "float64", pa.string(): "string"}
    # fresh dicts per column: a YAML dump would write shared ones as anchors and aliases
    return [
        {
            "name": f.name,
            "list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}],
        }
        if f.type == pa.list_(MESSAGE)
        else {"name": f.name, "dtype": dtypes[f.type]}
        for f in SCHEMA
    ]


class _Chunks:
    """A write-only file that keeps what was written until it is taken."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class ParquetStream:
    """Encode records (dicts with the ``SCHEMA`` columns) as one Parquet file, in pieces:
    ``add`` buffers records and returns the bytes of each full row group, ``close`` the last
    row group and the footer."""

    def __init__(self, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self._sink = _Chunks()
        self._writer = pq.ParquetWriter(
            pa.PythonFile(self._sink, mode="w"), SCHEMA, compression="zstd"
        )
        self._pending: list[dict[str, Any]] = []
        self._row_group_rows = row_group_rows

    def _write(self) -> None:
        if self._pending:
            self._writer.write_table(
                pa.Table.from_pylist(self._pending, schema=SCHEMA),
                row_group_size=self._row_group_rows,
            )
            self._pending = []

    def add(self, records: Sequence[dict[str, Any]]) -> bytes:
        self._pending.extend(records)
        if len(self._pending) >= self._row_group_rows:
            self._write()
        return self._sink.take()

    def close(self) -> bytes:
        self._write()
        self._writer.close()
        return self._sink.take()
