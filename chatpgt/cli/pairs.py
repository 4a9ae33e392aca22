"""``chatpgt pairs``: statistics of the preference pairs, and their export to a file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.filesize import decimal as filesize
from rich.markup import escape
from rich.table import Table

from chatpgt.cli.context import api
from chatpgt.cli.options import AsJson, JobFilter, MinConfidence, ModelFilter, SourceFilter
from chatpgt.cli.output import err, out, plural, transfer_progress, usage
from chatpgt.pairs.schemas import PairStats

app = typer.Typer(help="Statistics and export of the preference pairs.", no_args_is_help=True)


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


@app.command("export")
def pairs_export(
    ctx: typer.Context,
    out_path: Annotated[
        str,
        typer.Option("--out", "-o", help="file to write ('-' for stdout)", show_default=False),
    ],
    fmt: Annotated[
        Literal["jsonl", "csv"],
        typer.Option("--format", "-f", help="jsonl: TRL preference records; csv: seed columns"),
    ] = "jsonl",
    min_confidence: MinConfidence = None,
    job: JobFilter = None,
    model: ModelFilter = None,
    source: SourceFilter = None,
) -> None:
    """Stream the matching pairs to a file. The file appears whole or not at all."""
    client = api(ctx)
    counter = RowCounter(fmt)
    size = 0
    with client.export_pairs(
        fmt, min_confidence=min_confidence, job_ids=job or [], model=model, source=source
    ) as chunks:
        if out_path == "-":
            sink = sys.stdout.buffer
            for chunk in chunks:
                sink.write(chunk)
                counter.feed(chunk)
                size += len(chunk)
            sink.flush()
            err.print(f"wrote {plural(counter.rows, 'pair')} ({filesize(size)})")
            return
        target = Path(out_path).expanduser()
        if target.is_dir():
            usage(f"--out {out_path} is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as handle, transfer_progress("exporting") as report:
                for chunk in chunks:
                    handle.write(chunk)
                    counter.feed(chunk)
                    size += len(chunk)
                    report(counter.rows, size)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    out.print(
        f"wrote {plural(counter.rows, 'pair')} ({filesize(size)}) to {escape(str(target))}"
    )
