"""``chatpgt datasets ...``: exports with a dataset card (Hugging Face folder, Parquet, JSONL),
``--push-to-hub``, near-duplicate scans and pair imports, through the API.

Every command talks to the API at the root ``--api`` (and sends
``--api-key``); the Hugging Face conversion and the upload run here, from the exported Parquet.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer

from chatpgt.api_client.client import DEFAULT_API_URL, EXPORT_TIMEOUT, _problem_detail
from chatpgt.cli.output import EXIT_USAGE, fail
from chatpgt.datasets.hf import (
    DATA_FILE_NAMES,
    check_target,
    hub_token,
    partial_dir,
    publish,
    push_to_hub,
    save_hf_folder,
)
from chatpgt.errors import InvalidInput

app = typer.Typer(
    help="Datasets: export with a card (Hugging Face, Parquet, JSONL), push to the Hub, "
    "near-duplicate scans, imports.",
    no_args_is_help=True,
)


@contextmanager
def _api(ctx: typer.Context) -> Iterator[httpx.Client]:
    state = ctx.find_root().obj
    base = getattr(state, "api_url", None) or DEFAULT_API_URL
    key = getattr(state, "api_key", None)
    headers = {"Authorization": f"Bearer {key}"} if key else None
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=EXPORT_TIMEOUT) as client:
            yield client
    except httpx.RequestError as exc:
        fail(f"cannot reach the API at {base}: {type(exc).__name__}: {exc}")


def _check(response: httpx.Response) -> None:
    if response.is_error:
        response.read()
        detail, _ = _problem_detail(response)
        fail(f"{response.status_code}: {detail}")


def _params(
    min_confidence: float | None,
    job: list[int] | None,
    model: str | None,
    source: str | None,
    dedup_threshold: float | None,
    balance_length: bool,
) -> dict[str, Any]:
    params: dict[str, Any] = {"balance_length": balance_length}
    for name, value in (
        ("min_confidence", min_confidence),
        ("job_id", job or None),
        ("model", model),
        ("source", source),
        ("dedup_threshold", dedup_threshold),
    ):
        if value is not None:
            params[name] = value
    return params


def _download(client: httpx.Client, params: dict[str, Any], fmt: str, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with client.stream("GET", "/pairs/export", params={**params, "format": fmt}) as response:
        _check(response)
        with target.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)
                size += len(chunk)
    return size


def _card(client: httpx.Client, params: dict[str, Any], layout: str) -> str:
    response = client.get("/pairs/card", params={**params, "layout": layout})
    _check(response)
    return response.text


@app.command("export")
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to create (or empty)")],
    fmt: Annotated[
        Literal["hf", "parquet", "jsonl"],
        typer.Option(
            "--format",
            "-f",
            help="hf: a datasets.save_to_disk folder; parquet/jsonl: data/train-*.{parquet,jsonl}"
            " (the Hub's layout); each with README.md, the dataset card",
        ),
    ] = "hf",
    push_to_hub_repo: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            help="also upload the Parquet and the card to this Hub dataset repo (needs a token)",
        ),
    ] = None,
    public: Annotated[bool, typer.Option(help="create the Hub repo public (default private)")] = (
        False
    ),
    hf_token: Annotated[
        str | None,
        typer.Option(help="Hugging Face token (default: HF_TOKEN or the saved login)"),
    ] = None,
    min_confidence: Annotated[float | None, typer.Option(help="keep pairs with ≥ this")] = None,
    job: Annotated[list[int] | None, typer.Option(help="only this job (repeatable)")] = None,
    model: Annotated[str | None, typer.Option(help="only pairs with this model")] = None,
    source: Annotated[Literal["judged", "corpus", "imported"] | None, typer.Option()] = None,
    dedup_threshold: Annotated[
        float | None,
        typer.Option(help="leave out pairs with a near-duplicate essay (0 < t ≤ 1)"),
    ] = None,
    balance_length: Annotated[
        bool, typer.Option(help="drop pairs so the chosen essay is longer in half of them")
    ] = False,
) -> None:
    """Export the matching pairs with their dataset card; the directory appears whole or not
    at all."""
    if push_to_hub_repo and fmt == "jsonl":
        fail("--push-to-hub uploads Parquet: use --format hf or parquet", EXIT_USAGE)
    try:
        token = hub_token(hf_token) if push_to_hub_repo else None
        check_target(out)
    except InvalidInput as exc:
        fail(exc.detail, EXIT_USAGE)
    params = _params(min_confidence, job, model, source, dedup_threshold, balance_length)
    built = partial_dir(out)
    try:
        with _api(ctx) as client:
            data_fmt = "jsonl" if fmt == "jsonl" else "parquet"
            data = built / DATA_FILE_NAMES[data_fmt]
            size = _download(client, params, data_fmt, data)
            hub_card = _card(client, params, "parquet") if push_to_hub_repo else None
            card = _card(client, params, fmt)
        if fmt == "hf":
            rows = save_hf_folder(data, card, out)
        else:
            (built / "README.md").write_text(card, encoding="utf-8")
            rows = _count_rows(data, data_fmt)
            publish(built, out)
        typer.echo(f"wrote {rows} pairs ({size} bytes of {data_fmt}) to {out}")
        if push_to_hub_repo and token and hub_card is not None:
            source_file = out / DATA_FILE_NAMES["parquet"] if fmt == "parquet" else data
            url = push_to_hub(
                source_file, hub_card, push_to_hub_repo, token=token, private=not public
            )
            typer.echo(f"pushed to {url}")
    finally:
        shutil.rmtree(built, ignore_errors=True)


def _count_rows(path: Path, fmt: str) -> int:
    if fmt == "jsonl":
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


@app.command("dedup")
def dedup(
    ctx: typer.Context,
    job: Annotated[
        list[int] | None, typer.Option(help="scan these jobs together (default all)")
    ] = None,
    threshold: Annotated[float, typer.Option(help="similarity to flag at (0 < t ≤ 1)")] = 0.7,
) -> None:
    """Flag near-duplicate essays (MinHash-LSH) of the jobs, against each other and the corpus."""
    with _api(ctx) as client:
        response = client.post("/pairs/dedup", json={"job_ids": job or [], "threshold": threshold})
        _check(response)
    typer.echo(json.dumps(response.json()))


@app.command("import")
def import_pairs(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Hub id, or a path the API can read")],
    split: Annotated[str, typer.Option()] = "train",
    limit: Annotated[int | None, typer.Option(help="at most this many rows")] = None,
    confidence: Annotated[
        float | None, typer.Option(help="confidence of rows without one (default 10)")
    ] = None,
) -> None:
    """Import prompt/chosen/rejected pairs from a Hugging Face preference dataset as a job."""
    body: dict[str, Any] = {"dataset": dataset, "split": split}
    if limit is not None:
        body["limit"] = limit
    if confidence is not None:
        body["confidence"] = confidence
    with _api(ctx) as client:
        response = client.post("/pairs/import", json=body)
        _check(response)
    typer.echo(json.dumps(response.json()))
