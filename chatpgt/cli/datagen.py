"""``chatpgt datagen``: submit a datagen job and follow it, show its status, cancel it.

A followed job's exit code (and ``datagen status``'s) follows the job-outcome contract: non-zero
when the job failed or produced nothing (``outcome == "nothing_produced"``), with the outcome
and the first failure reasons printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

from chatpgt.api_client.requests import build_job_request
from chatpgt.cli.context import api
from chatpgt.cli.leased import LeasedCommands
from chatpgt.cli.options import AsJson
from chatpgt.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    TERMINAL_STATUSES,
    BarDisplay,
    cost,
    duration,
    err,
    one_line,
    out,
    plural,
    usage,
)
from chatpgt.datagen.pairing import PairingRule
from chatpgt.datagen.schemas import DatagenJobView, StageCounts

NOTHING_PRODUCED = "nothing_produced"
SHOWN_FAILURE_REASONS = 3

app = typer.Typer(
    help="Generate preference pairs: submit, follow, cancel jobs.", no_args_is_help=True
)


# -- what a job shows ---------------------------------------------------------------------------


def _finished(counts: StageCounts) -> int:
    return counts.done + counts.failed + counts.skipped + counts.cancelled


def _stage_note(counts: StageCounts) -> str:
    notes = [
        f"{n} {what}"
        for n, what in (
            (counts.failed, "failed"),
            (counts.skipped, "skipped"),
            (counts.cancelled, "cancelled"),
        )
        if n
    ]
    return ", ".join(notes)


def _job_cost(job: DatagenJobView) -> str:
    text = cost(job.cost_usd, job.budget_usd)
    if job.cache_hits:
        text += f" ({plural(job.cache_hits, 'cached answer')})"
    if job.saved_usd:
        text += f", ${job.saved_usd:.4f} saved"
    waiting = [b for b in job.batches if b.status not in ("done", "abandoned")]
    if waiting:
        n = len(waiting)
        text += f" · {n} batch{'' if n == 1 else 'es'} at the provider"
    return text


class JobDisplay(BarDisplay):
    """Bars for generations and judgments, and a line with the status, pairs and cost."""

    def __init__(self) -> None:
        super().__init__(
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
        )
        self.generations = self.progress.add_task("generations", total=None, note="")
        self.judgments = self.progress.add_task("judgments", total=None, note="")

    def update(self, job: DatagenJobView, elapsed_s: float) -> None:
        for task, counts in ((self.generations, job.generations), (self.judgments, job.judgments)):
            self.progress.update(
                task,
                total=counts.total or None,
                completed=_finished(counts),
                note=_stage_note(counts),
            )
        self.line.plain = (
            f"job {job.id} {job.status} · {plural(job.pairs, 'pair')} · {plural(job.ties, 'tie')}"
            f" · {_job_cost(job)} · {duration(elapsed_s)}"
        )

    def plain(self, job: DatagenJobView) -> str:
        g, j = job.generations, job.judgments
        return (
            f"job {job.id} {job.status}: generations {_finished(g)}/{g.total}, "
            f"judgments {_finished(j)}/{j.total}, {plural(job.pairs, 'pair')}, {_job_cost(job)}"
        )


def job_summary(job: DatagenJobView) -> str:
    """The final line of a job: status, pairs, work done, cost."""
    g, j = job.generations, job.judgments

    def stage(name: str, counts: StageCounts) -> str:
        note = _stage_note(counts)
        return f"{name} {counts.done}/{counts.total}" + (f" ({note})" if note else "")

    flagged = sum(job.near_duplicates.values())
    dupes = f" · {plural(flagged, 'near-duplicate essay')} flagged" if flagged else ""
    return (
        f"job {job.id} {job.status}: {plural(job.pairs, 'pair')} ({plural(job.ties, 'tie')}) "
        f"from {plural(job.topics, 'topic')}"
        f" · {stage('generations', g)} · {stage('judgments', j)}{dupes} · {_job_cost(job)}"
    )


# -- the job-outcome contract -------------------------------------------------------------------


def job_outcome(job: DatagenJobView) -> str | None:
    """``produced``, ``produced_with_failures`` or ``nothing_produced``; None while the job runs.

    The API's ``outcome`` when it sends one; for a finished job of an API that does not (an
    older version), the same rule applied to its counts."""
    outcome = getattr(job, "outcome", None)
    if outcome is not None or job.status not in TERMINAL_STATUSES:
        return None if outcome is None else str(outcome)
    if job.pairs == 0:
        return NOTHING_PRODUCED
    failed = job.generations.failed + job.judgments.failed
    return "produced_with_failures" if failed else "produced"


def failure_reasons(job: DatagenJobView, limit: int = SHOWN_FAILURE_REASONS) -> list[str]:
    """The most common failure reasons (the API's ``failure_summary``), else the first item
    errors kept on the job."""
    summary: list[Any] = getattr(job, "failure_summary", None) or []
    reasons = []
    for entry in summary[:limit]:
        item = entry if isinstance(entry, dict) else entry.model_dump()
        where = "/".join(str(item[k]) for k in ("provider", "model") if item.get(k))
        stage = item.get("stage") or "item"
        reason = one_line(str(item.get("reason") or "unknown"))
        count = item.get("count")
        reasons.append(
            f"{stage}{f' {where}' if where else ''}: {reason}"
            + (f" (×{count})" if isinstance(count, int) else "")
        )
    if reasons:
        return reasons
    for error in job.errors[:limit]:
        kind = error.get("kind") or "item"
        reasons.append(f"{kind}: {one_line(str(error.get('error') or 'unknown'))}")
    return reasons


def job_exit_code(job: DatagenJobView) -> int:
    """1 for a job that failed or produced nothing, else 0 (a job still running is 0)."""
    if job.status == "failed" or job_outcome(job) == NOTHING_PRODUCED:
        return EXIT_FAILED
    return EXIT_OK


def _show_end(job: DatagenJobView) -> None:
    """The summary line, why it stopped, and (when it failed or produced nothing) its outcome
    and first failure reasons."""
    out.print(escape(job_summary(job)), soft_wrap=True)
    if job.stop_reason and job.stop_reason != "cancelled":
        out.print(f"stopped: {escape(job.stop_reason)}", soft_wrap=True)
    outcome = job_outcome(job)
    if job_exit_code(job) != EXIT_OK:
        out.print(f"outcome: {escape(outcome or job.status)}", soft_wrap=True)
        for reason in failure_reasons(job):
            out.print(f"  {escape(reason)}", soft_wrap=True)
    if job.error:
        err.print(f"error: {escape(one_line(job.error))}", soft_wrap=True)


def followed_exit_code(job: DatagenJobView) -> int:
    """A followed job's: 0 only when it succeeded and produced pairs (cancelled is 1 too)."""
    return job_exit_code(job) if job.status == "succeeded" else EXIT_FAILED


def _finish_job(job: DatagenJobView) -> int:
    _show_end(job)
    return followed_exit_code(job)


def _show_job(job: DatagenJobView, followed: bool) -> int:
    _show_end(job)
    return followed_exit_code(job) if followed else job_exit_code(job)


JOBS = LeasedCommands[DatagenJobView](
    label=lambda job: f"job {job.id}",
    fetch=lambda client, job_id: client.get_job(job_id),
    cancel_call=lambda client, job_id: client.cancel_job(job_id),
    display=JobDisplay,
    finish=_finish_job,
    show=_show_job,
    json_code=job_exit_code,
    status_command="chatpgt datagen status {id}",
    stopping=" (stopping; what is done is kept)",
)


# -- commands -----------------------------------------------------------------------------------


def read_topics_file(path: Path) -> list[str]:
    """Titles from a text file, one per line; blank lines and lines starting with # are skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@app.command("run")
def datagen_run(
    ctx: typer.Context,
    generator: Annotated[
        list[str],
        typer.Option(
            "--generator",
            "-g",
            help=r"provider:model\[:samples\[:temperature]], repeatable",
            show_default=False,
        ),
    ],
    judge: Annotated[
        str,
        typer.Option(
            "--judge",
            "-j",
            help="provider:model of the judge, or style_classifier (no provider)",
            show_default=False,
        ),
    ],
    topic: Annotated[
        list[str] | None, typer.Option("--topic", "-t", help="a topic title, repeatable")
    ] = None,
    topics_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="a file of titles, one per line"),
    ] = None,
    topic_id: Annotated[
        list[int] | None, typer.Option("--topic-id", help="an existing topic id, repeatable")
    ] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="sample N topics from the pool")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed of --sample")] = None,
    pairing: Annotated[
        PairingRule | None, typer.Option(help="which judged matchups become pairs")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="stop new requests past this many US dollars")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="max tokens of each generated essay")
    ] = None,
    corpus_pairs: Annotated[
        bool,
        typer.Option("--corpus-pairs", help="also pair the real essay over each candidate"),
    ] = False,
    dedup_threshold: Annotated[
        float | None,
        typer.Option(
            help="flag each topic's near-duplicate essays (of each other and of the real "
            "essay) at this similarity (0 < t ≤ 1) and leave them out of judging and pairing",
            show_default=False,
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="resubmitting with the same key replays the first job")
    ] = None,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="send the generators' and the judge's requests through the providers' Batch "
            "API: about half price, answers within the provider's window (docs/cost.md)",
        ),
    ] = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help="answer requests asked before from the response cache, at $0",
        ),
    ] = True,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="follow the job to its end")
    ] = True,
) -> None:
    """Submit a datagen job and follow it: generations, judgments, pairs, cost.

    Exits 0 when the job succeeds with pairs, 1 when it fails, is cancelled or produces nothing.
    Ctrl-C asks whether to cancel the job or detach (130).
    """
    titles = list(topic or []) + (read_topics_file(topics_file) if topics_file else [])
    if topics_file is not None and not titles and not topic:
        usage(f"{topics_file} holds no titles")
    request = build_job_request(
        titles=titles,
        topic_ids=topic_id or [],
        sample=sample,
        seed=seed,
        generators=generator,
        judge=judge,
        pairing=pairing,
        budget_usd=budget,
        max_tokens=max_tokens,
        corpus_pairs=corpus_pairs,
        dedup_threshold=dedup_threshold,
        batch=batch,
        cache=cache,
    )
    job, created = api(ctx).create_job(request, idempotency_key=idempotency_key)
    if created:
        err.print(f"submitted job {job.id}: {plural(job.topics, 'topic')}")
    else:
        err.print(f"job {job.id} was already submitted with this idempotency key ({job.status})")
    JOBS.submitted(ctx, job, follow)


@app.command("status")
def datagen_status(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(min=1, help="job id", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow it to its end")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a job's status; with --follow, follow it (exit codes as for run). Exits 1 for a job
    that failed or produced nothing."""
    raise typer.Exit(JOBS.status(ctx, job_id, follow=follow, as_json=as_json))


@app.command("cancel")
def datagen_cancel(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(min=1, help="job id", show_default=False)],
) -> None:
    """Cancel a job: a queued job at once, a running one after its requests in flight."""
    JOBS.cancel(ctx, job_id)
