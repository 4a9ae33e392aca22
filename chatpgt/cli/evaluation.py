"""``chatpgt eval``: run an evaluation, follow it, print its table, fetch its report.

A typer app registered in :mod:`chatpgt.cli` as ``eval``. It talks to the API through the
CLI's :class:`chatpgt.api_client.client.ChatPGTClient` (the root's ``--api``, ``--api-key``).
:func:`evaluate_and_print` is the hook the demo calls to end with the base/SFT/DPO table.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

from chatpgt.api_client.client import ChatPGTClient
from chatpgt.api_client.requests import InvalidRequest, parse_eval_judge
from chatpgt.cli.context import api as client_of
from chatpgt.cli.leased import LeasedCommands
from chatpgt.cli.output import EXIT_FAILED, EXIT_OK, BarDisplay
from chatpgt.cli.output import TERMINAL_STATUSES as TERMINAL
from chatpgt.evaluation.schemas import EvalRequest, EvalRunOut
from chatpgt.evaluation.table import WIDTH, display_name, format_table

app = typer.Typer(help="Evaluate models on the held-out essays.", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def progress_line(run: EvalRunOut) -> str:
    p = run.progress
    parts = [f"eval run {run.id} {run.status}"]
    if p.get("stage"):
        stage = str(p["stage"])
        if p.get("model"):
            name = display_name({"name": p["model"]})
            stage += f" · {name} ({p.get('model_index')}/{p.get('models')})"
        parts.append(stage)
    if p.get("total"):
        parts.append(f"{p.get('done', 0)}/{p['total']}")
    if p.get("eta_s") is not None and run.status == "running":
        parts.append(f"ETA {round(p['eta_s'])}s")
    return " · ".join(parts)


class EvalDisplay(BarDisplay):
    """One bar: the progress line, the essays done of the stage's total."""

    def __init__(self) -> None:
        super().__init__(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        self.task = self.progress.add_task("", total=None)

    def renderable(self) -> RenderableType:
        return self.progress

    def update(self, run: EvalRunOut, elapsed_s: float) -> None:
        self.progress.update(
            self.task,
            description=escape(progress_line(run)),
            total=run.progress.get("total"),
            completed=run.progress.get("done", 0),
        )

    @staticmethod
    def plain(run: EvalRunOut) -> str:
        return progress_line(run)


def print_results(run: EvalRunOut, console: Console = out) -> None:
    """The results (at most 80 columns: a legend of the models, three narrow tables, the
    verdict, the notes), the held-out statement and the report's path."""
    console.print(
        f"evaluation {run.id}" + (f" ({escape(run.name)})" if run.name else ""), soft_wrap=True
    )
    if run.heldout.get("statement"):
        for line in textwrap.wrap(str(run.heldout["statement"]), WIDTH):
            console.print(escape(line), soft_wrap=True)
    console.print("")
    for line in format_table(run.results).splitlines():
        console.print(escape(line), soft_wrap=True)
    if run.artifacts.get("report_html"):
        console.print(f"report: {escape(str(run.artifacts['report_html']))}", soft_wrap=True)


def finish(run: EvalRunOut) -> int:
    if run.status == "succeeded":
        print_results(run)
        return EXIT_OK
    out.print(escape(progress_line(run)))
    if run.error:
        err.print(f"error: {escape(run.error.splitlines()[0])}", soft_wrap=True)
    return EXIT_FAILED


def _show(run: EvalRunOut, followed: bool) -> int:
    if run.status not in TERMINAL:
        out.print(escape(progress_line(run)))
        return EXIT_OK
    return finish(run)


# Ctrl-C detaches at once (an evaluation is not offered for cancel while followed).
EVAL = LeasedCommands[EvalRunOut](
    label=lambda run: f"eval run {run.id}",
    fetch=lambda client, run_id: client.get_eval(run_id),
    cancel_call=lambda client, run_id: client.cancel_eval(run_id),
    display=EvalDisplay,
    finish=finish,
    show=_show,
    status_command="chatpgt eval status {id}",
    stopping=" (stopping at its next essay)",
    interval_s=1.0,
    offer_cancel=False,
)


def evaluate_and_print(
    client: ChatPGTClient, models: Sequence[int | str], console: Console = out, **request: Any
) -> EvalRunOut:
    """The demo's hook: evaluate ``models`` (e.g. base, SFT, DPO ids), wait, print the table and
    the report's path; returns the finished run. ``request`` takes any other EvalRequest field
    (``max_essays=3``, ``judge={...}``, ``generation={"max_new_tokens": 200}``)."""
    request_ = EvalRequest.model_validate({"models": list(models), **request})
    run = EVAL.follow_with(client, client.submit_eval(request_))
    if run.status == "succeeded":
        print_results(run, console)
    else:
        console.print(escape(progress_line(run) + (f": {run.error}" if run.error else "")))
    return run


def parse_judge(spec: str) -> dict[str, Any]:
    """``provider:model`` or ``provider:model:method`` (method json or ab_probability)."""
    try:
        return parse_eval_judge(spec)
    except InvalidRequest:
        raise typer.BadParameter("use provider:model or provider:model:ab_probability") from None


@app.command("run")
def eval_run(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Argument(help="registry ids or names, model dirs, hub ids")],
    sft_run: Annotated[
        int | None, typer.Option(help="SFT run whose split holds essays out")
    ] = None,
    max_essays: Annotated[int | None, typer.Option(help="only the first N held-out essays")] = None,
    judge: Annotated[
        str | None, typer.Option(help="provider:model[:ab_probability] judge for the win rate")
    ] = None,
    reference: Annotated[str, typer.Option(help="sft, real, or one of the models")] = "sft",
    other_essays: Annotated[
        str | None, typer.Option(help="other writers' essays for the style classifier (a file)")
    ] = None,
    style: Annotated[
        bool, typer.Option("--style/--no-style", help="style classifier score")
    ] = True,
    perplexity: Annotated[bool, typer.Option("--perplexity/--no-perplexity")] = True,
    max_new_tokens: Annotated[int | None, typer.Option(help="tokens of each generation")] = None,
    name: Annotated[str | None, typer.Option(help="a name for the run")] = None,
    do_follow: Annotated[bool, typer.Option("--follow/--no-follow")] = True,
) -> None:
    """Queue an evaluation of MODELS on the held-out essays of their lineage."""
    body: dict[str, Any] = {
        "models": [int(m) if m.isdigit() else m for m in models],
        "reference": reference,
        "perplexity": perplexity,
        "style": {"enabled": style, **({"other_essays": other_essays} if other_essays else {})},
    }
    for key, value in (("sft_run", sft_run), ("max_essays", max_essays), ("name", name)):
        if value is not None:
            body[key] = value
    if judge:
        body["judge"] = parse_judge(judge)
    if max_new_tokens:
        body["generation"] = {"max_new_tokens": max_new_tokens}
    api = client_of(ctx)
    run = api.submit_eval(EvalRequest.model_validate(body))
    err.print(
        f"submitted eval run {run.id}: {escape(str(run.heldout.get('statement', '')))}",
        soft_wrap=True,
    )
    EVAL.submitted(ctx, run, do_follow)


@app.command("status")
def eval_status(
    ctx: typer.Context,
    run_id: int,
    do_follow: Annotated[bool, typer.Option("--follow/--no-follow")] = False,
) -> None:
    """Show an evaluation run (its table once it succeeded)."""
    raise typer.Exit(EVAL.status(ctx, run_id, follow=do_follow, as_json=False))


@app.command("report")
def eval_report(
    ctx: typer.Context,
    run_id: int,
    html: Annotated[Path | None, typer.Option(help="save the HTML report to this file")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="save report.json here")] = None,
) -> None:
    """Print an evaluation's table; save its HTML or JSON report."""
    api = client_of(ctx)
    run = api.get_eval(run_id)
    print_results(run)
    if html is not None:
        html.write_bytes(api.eval_report(run_id, "html"))
        err.print(f"wrote {escape(str(html))}")
    if json_out is not None:
        json_out.write_bytes(api.eval_report(run_id, "json"))
        err.print(f"wrote {escape(str(json_out))}")
