"""``chatpgt pairs``: statistics of the preference pairs, their export (JSONL, CSV, Parquet, a
Hugging Face folder; a dataset card with every directory; ``--push-to-hub``), near-duplicate
scans and imports of Hugging Face preference datasets, all through the API client
(``chatpgt.api_client``); the Hugging Face conversion and the upload run here, from the
exported Parquet."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

import typer
from rich.console import Console
from rich.filesize import decimal as filesize
from rich.markup import escape
from rich.progress import BarColumn, TextColumn
from rich.table import Table

from chatpgt.api_client import ChatPGTClient, PairSelection
from chatpgt.api_client.client import CardLayout
from chatpgt.api_client.requests import build_dedup_request, build_pair_import
from chatpgt.cli.context import api
from chatpgt.cli.leased import LeasedCommands
from chatpgt.cli.options import AsJson, JobFilter, MinConfidence, ModelFilter, SourceFilter
from chatpgt.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    TERMINAL_STATUSES,
    BarDisplay,
    duration,
    err,
    one_line,
    out,
    plural,
    transfer_progress,
    usage,
)
from chatpgt.datasets.hf import (
    DATA_FILE_NAMES,
    check_target,
    hub_token,
    partial_dir,
    publish,
    push_to_hub,
    save_hf_folder,
)
from chatpgt.datasets.schemas import DedupScanOut
from chatpgt.errors import InvalidInput
from chatpgt.pairs.schemas import PairSource, PairStats

app = typer.Typer(
    help="Statistics, export (with a dataset card), near-duplicate scans and imports of the "
    "preference pairs.",
    no_args_is_help=True,
)

Format = Literal["jsonl", "csv", "parquet", "hf"]
# The file a format is written as when --out names a file (a path with this suffix, or '-').
FILE_SUFFIXES = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
ExportSource = Annotated[
    PairSource | None, typer.Option("--source", help="pair source: judged, corpus, imported")
]


def print_pair_stats(stats: PairStats, console: Console) -> None:
    """The statistics as a few readable tables."""
    c = stats.counts
    console.print(
        f"[bold]{plural(c.total, 'pair')}[/bold] ({c.judged} judged, {c.corpus} corpus)",
        soft_wrap=True,
    )

    top = max((b.count for b in stats.confidence_histogram), default=0)
    hist = Table(title="confidence", title_justify="left", box=None, pad_edge=False)
    hist.add_column("bucket", justify="right")
    hist.add_column("pairs", justify="right")
    hist.add_column("")
    for bucket in stats.confidence_histogram:
        bar = "█" * round(30 * bucket.count / top) if top else ""
        hist.add_row(str(bucket.bucket), str(bucket.count), bar)
    console.print(hist)

    if stats.models:
        models = Table(title="models", title_justify="left")
        for name in ("model", "wins", "losses", "win rate"):
            models.add_column(name, justify="left" if name == "model" else "right")
        for m in stats.models:
            models.add_row(escape(m.model), str(m.wins), str(m.losses), f"{m.win_rate:.0%}")
        console.print(models)
    if stats.matchups:
        matchups = Table(title="matchups (chosen over rejected)", title_justify="left")
        for name in ("chosen", "rejected", "pairs"):
            matchups.add_column(name, justify="right" if name == "pairs" else "left")
        for mu in stats.matchups[:10]:
            matchups.add_row(escape(mu.chosen_model), escape(mu.rejected_model), str(mu.count))
        if len(stats.matchups) > 10:
            matchups.caption = f"{len(stats.matchups) - 10} more matchups"
        console.print(matchups)
    lengths = Table(title="lengths (characters)", title_justify="left")
    for name in ("", "mean", "median", "min", "max"):
        lengths.add_column(name, justify="left" if not name else "right")
    for side, ls in (("chosen", stats.lengths.chosen), ("rejected", stats.lengths.rejected)):
        if ls is not None:
            lengths.add_row(side, f"{ls.mean:.0f}", f"{ls.median:.0f}", str(ls.min), str(ls.max))
    if stats.lengths.chosen or stats.lengths.rejected:
        console.print(lengths)

    j = stats.judge
    flip = f"{j.flip_rate:.1%}" if j.flip_rate is not None else "n/a"
    console.print(
        f"judge: {j.matchups} matchups judged in both orders, {j.flips} flips ({flip})",
        soft_wrap=True,
    )
    cost = Table(title="cost", title_justify="left")
    for name in ("", "requests", "prompt tokens", "completion tokens", "US$"):
        cost.add_column(name, justify="left" if not name else "right")
    for name, work in (
        ("generations", stats.cost.generations),
        ("judgments", stats.cost.judgments),
    ):
        cost.add_row(
            name,
            str(work.count),
            f"{work.prompt_tokens:,}",
            f"{work.completion_tokens:,}",
            f"{work.cost_usd:.4f}",
        )
    cost.add_row("total", "", "", "", f"{stats.cost.total_cost_usd:.4f}", style="bold")
    console.print(cost)


@app.command("stats")
def pairs_stats(
    ctx: typer.Context,
    min_confidence: MinConfidence = None,
    job: JobFilter = None,
    model: ModelFilter = None,
    source: SourceFilter = None,
    as_json: AsJson = False,
) -> None:
    """Counts, confidence histogram, model win rates, lengths, judge consistency and cost."""
    stats = api(ctx).pair_stats(
        min_confidence=min_confidence, job_ids=job or [], model=model, source=source
    )
    if as_json:
        typer.echo(stats.model_dump_json(indent=2))
        return
    print_pair_stats(stats, out)


class RowCounter:
    """Counts the records of an export as its bytes go by: JSONL lines, or CSV rows (a newline
    inside a quoted field does not end a row; the header row is not counted)."""

    def __init__(self, fmt: Literal["jsonl", "csv"]) -> None:
        self.fmt = fmt
        self._lines = 0
        self._in_quotes = False

    def feed(self, chunk: bytes) -> None:
        if self.fmt == "jsonl":
            self._lines += chunk.count(b"\n")
            return
        # Between quote characters the text alternates outside/inside a quoted field; an
        # escaped quote ("") toggles twice and changes nothing.
        for index, piece in enumerate(chunk.split(b'"')):
            if index:
                self._in_quotes = not self._in_quotes
            if not self._in_quotes:
                self._lines += piece.count(b"\n")

    @property
    def rows(self) -> int:
        return self._lines if self.fmt == "jsonl" else max(0, self._lines - 1)


def _copy(chunks: Iterator[bytes], sink: BinaryIO, counter: RowCounter | None) -> int:
    """Write the chunks to ``sink`` (a progress line on a terminal); the bytes written."""
    size = 0
    with transfer_progress("exporting") as report:
        for chunk in chunks:
            sink.write(chunk)
            size += len(chunk)
            if counter is not None:
                counter.feed(chunk)
            report(counter.rows if counter is not None else 0, size)
    return size


@contextmanager
def _partial_file(target: Path) -> Iterator[Path]:
    """A hidden file next to ``target``, renamed onto it when the block ends without error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        yield partial
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _rows_of(path: Path, fmt: str) -> int:
    if fmt == "jsonl":
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    return _parquet_rows(path)


def _export_file(
    client: ChatPGTClient,
    fmt: Literal["jsonl", "csv", "parquet"],
    out_path: str,
    selection: PairSelection,
) -> tuple[Path | None, int | None, int]:
    """The selection as one file (``-``: stdout); (the file, its rows when known, bytes)."""
    counter = RowCounter(fmt) if fmt != "parquet" else None
    with client.export_pairs(fmt, selection) as chunks:
        if out_path == "-":
            size = _copy(chunks, sys.stdout.buffer, counter)
            sys.stdout.buffer.flush()
            return None, counter.rows if counter is not None else None, size
        target = Path(out_path).expanduser()
        if target.is_dir():
            usage(f"--out {out_path} is a directory")
        with _partial_file(target) as partial, partial.open("wb") as handle:
            size = _copy(chunks, handle, counter)
    rows = counter.rows if counter is not None else _parquet_rows(target)
    return target, rows, size


def _export_dir(
    client: ChatPGTClient, fmt: str, target: Path, selection: PairSelection, built: Path
) -> tuple[Path, int, int]:
    """The selection as a directory with its card, built in ``built`` then moved onto
    ``target``; (the data file to push, rows, bytes of data)."""
    data_fmt: Literal["jsonl", "parquet"] = "jsonl" if fmt == "jsonl" else "parquet"
    data = built / DATA_FILE_NAMES[data_fmt]
    data.parent.mkdir(parents=True, exist_ok=True)
    with (
        client.export_pairs(data_fmt, selection) as chunks,
        data.open("wb") as handle,
    ):
        size = _copy(chunks, handle, None)
    layout: CardLayout = "hf" if fmt == "hf" else data_fmt
    card = client.pair_card(layout, selection)
    if fmt == "hf":
        # The Parquet stays in ``built`` (removed afterwards); the folder goes to ``target``.
        return data, save_hf_folder(data, card, target), size
    (built / "README.md").write_text(card, encoding="utf-8")
    rows = _rows_of(data, data_fmt)
    publish(built, target)
    return target / DATA_FILE_NAMES[data_fmt], rows, size


@app.command("export")
def pairs_export(
    ctx: typer.Context,
    out_path: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="a file when it ends in the format's suffix (.jsonl, .csv, .parquet; csv: "
            "always) or is '-' (stdout); else a directory to create (or empty) with the data "
            "and README.md, the dataset card (hf: always a directory)",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="jsonl: TRL preference records; csv: seed columns; parquet: the jsonl columns "
            "in Parquet; hf: a datasets.save_to_disk folder",
        ),
    ] = "jsonl",
    min_confidence: MinConfidence = None,
    job: JobFilter = None,
    model: ModelFilter = None,
    source: ExportSource = None,
    dedup_threshold: Annotated[
        float | None,
        typer.Option(
            help="leave out pairs with an essay flagged as a near-duplicate at this similarity "
            "or more (0 < t ≤ 1; see `pairs dedup` and a job's dedup option)"
        ),
    ] = None,
    balance_length: Annotated[
        bool, typer.Option(help="drop pairs so the chosen essay is the longer in half of them")
    ] = False,
    push_to_hub_repo: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            help="also upload the Parquet and the card to this Hub dataset repo (--format "
            "parquet or hf; needs a token)",
            show_default=False,
        ),
    ] = None,
    public: Annotated[bool, typer.Option(help="create the Hub repo public (default private)")] = (
        False
    ),
    hf_token: Annotated[
        str | None,
        typer.Option(help="Hugging Face token (default: HF_TOKEN or the saved login)"),
    ] = None,
) -> None:
    """Export the matching pairs: a file, or a directory with its dataset card.

    What is written appears whole or not at all."""
    as_dir = fmt == "hf" or (
        fmt != "csv" and out_path != "-" and not out_path.endswith(FILE_SUFFIXES[fmt])
    )
    if fmt == "hf" and out_path == "-":
        usage("--format hf writes a directory: give --out DIR")
    if push_to_hub_repo and fmt not in ("parquet", "hf"):
        usage("--push-to-hub uploads Parquet: use --format parquet or hf")
    if push_to_hub_repo and out_path == "-":
        usage("--push-to-hub needs --out to name a file or directory, not '-'")
    try:
        token = hub_token(hf_token) if push_to_hub_repo else None
        if as_dir:
            check_target(Path(out_path).expanduser())
    except InvalidInput as exc:
        usage(exc.detail)
    selection = PairSelection(
        min_confidence, job or [], model, source, dedup_threshold, balance_length
    )
    client = api(ctx)
    if as_dir:
        target = Path(out_path).expanduser()
        built = partial_dir(target)
        try:
            data, rows, size = _export_dir(client, fmt, target, selection, built)
            _wrote(rows, size, "parquet" if fmt == "hf" else fmt, target)
            _pushed(client, push_to_hub_repo, token, public, data, selection)
        finally:
            shutil.rmtree(built, ignore_errors=True)
        return
    assert fmt != "hf"  # hf is always a directory
    path, counted, size = _export_file(client, fmt, out_path, selection)
    if path is None:
        err.print(
            f"wrote {plural(counted, 'pair') if counted is not None else fmt} ({filesize(size)})"
        )
        return
    _wrote(counted or 0, size, fmt, path)
    _pushed(client, push_to_hub_repo, token, public, path, selection)


def _wrote(rows: int, size: int, fmt: str, target: Path) -> None:
    out.print(f"wrote {plural(rows, 'pair')} ({filesize(size)} of {fmt}) to {escape(str(target))}")


def _pushed(
    client: ChatPGTClient,
    repo: str | None,
    token: str | None,
    public: bool,
    parquet: Path,
    selection: PairSelection,
) -> None:
    """Upload ``parquet`` with its card (the Hub's layout) to ``repo``, when one is given."""
    if not repo or not token:
        return
    card = client.pair_card("parquet", selection)
    url = push_to_hub(parquet, card, repo, token=token, private=not public)
    out.print(f"pushed to {escape(url)}")


class ScanDisplay(BarDisplay):
    """A bar of the essays scanned (of those counted when the scan started), a status line."""

    def __init__(self) -> None:
        super().__init__(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}")
        )
        self.task = self.progress.add_task("", total=None, counts="")

    def update(self, scan: DedupScanOut, elapsed_s: float) -> None:
        self.progress.update(
            self.task,
            description=f"dedup scan {scan.id}",
            total=scan.progress.total,
            completed=scan.progress.essays,
            counts=scan_counts(scan),
        )
        waiting = " (waiting for a datagen worker)" if scan.status == "queued" else ""
        self.line.plain = f"{scan.status}{waiting} · {duration(elapsed_s)}"

    @staticmethod
    def plain(scan: DedupScanOut) -> str:
        return f"dedup scan {scan.id} {scan.status}: {scan_counts(scan)}"


def scan_counts(scan: DedupScanOut) -> str:
    """``1,500/20,000 essays`` (``?`` before the scan has counted them)."""
    p = scan.progress
    total = "?" if p.total is None else f"{p.total:,}"
    return f"{p.essays:,}/{total} essays"


def scan_summary(scan: DedupScanOut) -> str:
    """The counts of a succeeded scan (else its status and progress), as one line."""
    result = scan.result
    if scan.status != "succeeded" or result is None:
        return ScanDisplay.plain(scan)
    flagged = result.flagged
    return (
        f"scanned {plural(result.essays, 'essay')} against "
        f"{plural(result.corpus_essays, 'corpus essay')} at {result.threshold:g}: "
        f"{flagged.get('essay', 0)} near-copies of another essay, "
        f"{flagged.get('corpus', 0)} of a corpus essay"
    )


def _finish_scan(scan: DedupScanOut, as_json: bool) -> int:
    if as_json:
        typer.echo(scan.model_dump_json())
    else:
        out.print(escape(scan_summary(scan)), soft_wrap=True)
    if scan.error:
        err.print(f"error: {escape(one_line(scan.error))}", soft_wrap=True)
    return EXIT_OK if scan.status == "succeeded" else EXIT_FAILED


SCANS = LeasedCommands[DedupScanOut](
    label=lambda scan: f"dedup scan {scan.id}",
    fetch=lambda client, scan_id: client.get_dedup_scan(scan_id),
    cancel_call=lambda client, scan_id: client.cancel_dedup_scan(scan_id),
    display=ScanDisplay,
    finish=lambda scan: _finish_scan(scan, as_json=False),
    status_command="chatpgt pairs dedup-status {id}",
    stopping=" (stopping at its next heartbeat)",
)


Follow = Annotated[
    bool,
    typer.Option(
        "--follow/--no-follow",
        "--wait/--no-wait",
        help="follow the scan to its end (--no-follow: print its id and return)",
    ),
]


@app.command("dedup")
def pairs_dedup(
    ctx: typer.Context,
    job: Annotated[
        list[int] | None, typer.Option("--job", help="scan these jobs together (default all)")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="similarity to flag at (0 < t ≤ 1; default 0.7)")
    ] = None,
    follow: Follow = True,
    as_json: AsJson = False,
) -> None:
    """Flag near-duplicate essays (MinHash-LSH) of the jobs, against each other and the corpus.

    The scan is queued and a datagen worker runs it; this follows it (essays scanned so far)
    and prints the counts. A new scan of a job replaces its flags."""
    scan = api(ctx).submit_dedup_scan(build_dedup_request(job_ids=job or [], threshold=threshold))
    if not follow:
        if as_json:
            typer.echo(scan.model_dump_json())
        else:
            err.print(f"submitted dedup scan {scan.id}")
            out.print(f"dedup scan {scan.id} {scan.status}")
        return
    err.print(f"submitted dedup scan {scan.id}")
    raise typer.Exit(_finish_scan(SCANS.follow(ctx, scan), as_json))


@app.command("dedup-status")
def pairs_dedup_status(
    ctx: typer.Context,
    scan_id: Annotated[int, typer.Argument(min=1, help="scan id", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow it to its end")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a near-duplicate scan: its progress, its counts once done (exit 1 when it failed
    or was cancelled)."""
    scan = api(ctx).get_dedup_scan(scan_id)
    if follow and scan.status not in TERMINAL_STATUSES:
        scan = SCANS.follow(ctx, scan)
    if scan.status in TERMINAL_STATUSES:
        raise typer.Exit(_finish_scan(scan, as_json))
    if as_json:
        typer.echo(scan.model_dump_json())
    else:
        out.print(escape(ScanDisplay.plain(scan)), soft_wrap=True)


@app.command("dedup-cancel")
def pairs_dedup_cancel(
    ctx: typer.Context,
    scan_id: Annotated[int, typer.Argument(min=1, help="scan id", show_default=False)],
) -> None:
    """Cancel a scan (a running one stops at its next heartbeat; no flag is changed)."""
    SCANS.cancel(ctx, scan_id)


@app.command("import")
def pairs_import(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Hub id, or a path the API can read")],
    split: Annotated[str | None, typer.Option(help="split (default train)")] = None,
    config: Annotated[str | None, typer.Option(help="dataset configuration")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many rows")] = None,
    confidence: Annotated[
        float | None, typer.Option(help="confidence of rows without one (default 10)")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Import prompt/chosen/rejected pairs from a Hugging Face preference dataset as a job."""
    request = build_pair_import(
        dataset=dataset, split=split, config=config, limit=limit, confidence=confidence
    )
    result = api(ctx).import_pairs(request)
    if as_json:
        typer.echo(result.model_dump_json())
        return
    out.print(
        f"imported {plural(result.pairs, 'pair')} as job {result.job_id} "
        f"({plural(result.topics, 'topic')}, {result.topics_created} new)",
        soft_wrap=True,
    )
