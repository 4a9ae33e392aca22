"""``chatpgt train``: submit SFT and DPO runs and follow them, show their status, cancel them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

import typer
from rich.console import RenderableType
from rich.markup import escape
from rich.progress import BarColumn, TextColumn
from rich.text import Text

from chatpgt.api_client.requests import (
    TrainingOptions,
    build_dpo_request,
    build_rounds_evaluation,
    build_rounds_request,
    build_sft_request,
)
from chatpgt.cli.context import api
from chatpgt.cli.leased import LeasedCommands
from chatpgt.cli.options import AsJson, JobFilter, SourceFilter
from chatpgt.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    TERMINAL_STATUSES,
    BarDisplay,
    duration,
    err,
    one_line,
    out,
)
from chatpgt.datagen.pairing import PairingRule
from chatpgt.evaluation.scores import EvalMetric
from chatpgt.rounds.schemas import RoundOut, RoundsRunOut
from chatpgt.training.schemas import TrainingRunOut

app = typer.Typer(help="SFT and DPO training runs.", no_args_is_help=True)


def _options(values: dict[str, Any]) -> TrainingOptions:
    """The training options among a command's parameters (named as TrainingOptions' fields)."""
    return TrainingOptions(**{f.name: values[f.name] for f in fields(TrainingOptions)})


def _latest_loss(run: TrainingRunOut) -> float | None:
    latest = run.metrics.get("latest") or {}
    loss = latest.get("loss", latest.get("train_loss"))
    return float(loss) if isinstance(loss, int | float) else None


class RunDisplay(BarDisplay):
    """A bar of step/total with loss, epoch and the server's ETA, and a status line."""

    def __init__(self) -> None:
        super().__init__(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("step {task.fields[step]}/{task.fields[total_text]}"),
            TextColumn("{task.fields[note]}"),
        )
        self.task = self.progress.add_task("", total=None, step=0, total_text="?", note="")

    def update(self, run: TrainingRunOut, elapsed_s: float) -> None:
        p = run.progress
        self.progress.update(
            self.task,
            description=f"{run.kind} run {run.id}",
            total=p.total_steps,
            completed=p.step,
            step=p.step,
            total_text="?" if p.total_steps is None else p.total_steps,
            note=self._note(run),
        )
        waiting = " (waiting for a gpu worker)" if run.status == "queued" else ""
        self.line.plain = f"{run.status}{waiting} · {run.name} · {duration(elapsed_s)}"

    @staticmethod
    def _note(run: TrainingRunOut) -> str:
        p = run.progress
        loss = _latest_loss(run)
        parts = []
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if p.epoch is not None:
            parts.append(f"epoch {p.epoch:.2f}")
        if p.eta_s is not None and run.status == "running":
            parts.append(f"ETA {duration(p.eta_s)}")
        return " · ".join(parts)

    def plain(self, run: TrainingRunOut) -> str:
        p = run.progress
        total = p.total_steps if p.total_steps is not None else "?"
        note = self._note(run)
        return f"{run.kind} run {run.id} {run.status}: step {p.step}/{total}" + (
            f", {note}" if note else ""
        )


def run_summary(run: TrainingRunOut) -> str:
    """The final line of a run: status, model, steps and final losses."""
    p = run.progress
    parts = [f"{run.kind} run {run.id} {run.status}"]
    detail = [f"step {p.step}/{p.total_steps if p.total_steps is not None else '?'}"]
    final = run.metrics.get("final") or {}
    for key in ("train_loss", "eval_loss"):
        value = final.get(key)
        if isinstance(value, int | float):
            detail.append(f"{key} {value:.4f}")
    if run.model_id is not None:
        detail.insert(0, f"model {run.name!r} (id {run.model_id})")
    return f"{parts[0]}: " + " · ".join(detail)


def _finish_run(run: TrainingRunOut) -> int:
    out.print(escape(run_summary(run)), soft_wrap=True)
    model_dir = run.artifacts.get("model_dir")
    if run.status == "succeeded" and model_dir:
        out.print(f"model directory: {escape(str(model_dir))}", soft_wrap=True)
    if run.error:
        err.print(f"error: {escape(one_line(run.error))}", soft_wrap=True)
    return EXIT_OK if run.status == "succeeded" else EXIT_FAILED


def _show_run(run: TrainingRunOut, followed: bool) -> int:
    if run.status in TERMINAL_STATUSES:
        code = _finish_run(run)
    else:
        out.print(escape(RunDisplay().plain(run)), soft_wrap=True)
        code = EXIT_OK
    for sample in run.samples[:3]:
        out.print(f"\n[bold]{escape(sample.prompt)}[/bold]\n{escape(sample.text)}", soft_wrap=True)
    return code if followed else EXIT_OK


RUNS = LeasedCommands[TrainingRunOut](
    label=lambda run: f"{run.kind} run {run.id}",
    fetch=lambda client, run_id: client.get_run(run_id),
    cancel_call=lambda client, run_id: client.cancel_run(run_id),
    display=RunDisplay,
    finish=_finish_run,
    show=_show_run,
    status_command="chatpgt train status {id}",
    stopping=" (stopping at the next step)",
    interval_s=1.0,
)


def _submitted(ctx: typer.Context, run: TrainingRunOut, follow: bool) -> None:
    err.print(f"submitted {run.kind} run {run.id} ({escape(run.name)})")
    RUNS.submitted(ctx, run, follow)


Epochs = Annotated[float | None, typer.Option(help="passes over the data", show_default=False)]
BatchSize = Annotated[int | None, typer.Option(help="per-device batch size", show_default=False)]
GradAccum = Annotated[int | None, typer.Option(help="gradient accumulation steps")]
LearningRate = Annotated[float | None, typer.Option("--lr", "--learning-rate", help="peak LR")]
Scheduler = Annotated[
    Literal["linear", "cosine", "cosine_with_restarts", "constant", "constant_with_warmup"] | None,
    typer.Option("--lr-scheduler", help="learning-rate schedule"),
]
WarmupRatio = Annotated[float | None, typer.Option(help="share of steps warming up")]
MaxLength = Annotated[int | None, typer.Option(help="tokens per training sequence")]
MaxSteps = Annotated[int | None, typer.Option(help="stop after this many steps")]
EvalFraction = Annotated[float | None, typer.Option(help="share held out for evaluation")]
Seed = Annotated[int | None, typer.Option(help="training seed")]
SaveSteps = Annotated[int | None, typer.Option(help="checkpoint every N steps")]
LoggingSteps = Annotated[int | None, typer.Option(help="log metrics every N steps")]
Lora = Annotated[bool, typer.Option("--lora", help="train a LoRA adapter (merged at the end)")]
LoraR = Annotated[int | None, typer.Option(help="LoRA rank (implies --lora)")]
LoraAlpha = Annotated[int | None, typer.Option(help="LoRA alpha (implies --lora)")]
RunName = Annotated[str | None, typer.Option(help="registry name of the trained model")]
SamplePrompt = Annotated[
    list[str] | None,
    typer.Option("--sample-prompt", help="prompt for a sample essay after training, repeatable"),
]
NoSamples = Annotated[bool, typer.Option("--no-samples", help="generate no sample essays")]
MaxNewTokens = Annotated[int | None, typer.Option(help="tokens of each sample essay")]
Follow = Annotated[bool, typer.Option("--follow/--no-follow", help="follow the run to its end")]

# The options SFT and DPO share, in the order `--help` lists them after each command's own.
COMMON_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
    for name, kind, default in (
        ("epochs", Epochs, None),
        ("batch_size", BatchSize, None),
        ("grad_accum", GradAccum, None),
        ("learning_rate", LearningRate, None),
        ("lr_scheduler", Scheduler, None),
        ("warmup_ratio", WarmupRatio, None),
        ("max_length", MaxLength, None),
        ("max_steps", MaxSteps, None),
        ("eval_fraction", EvalFraction, None),
        ("seed", Seed, None),
        ("save_steps", SaveSteps, None),
        ("logging_steps", LoggingSteps, None),
        ("lora", Lora, False),
        ("lora_r", LoraR, None),
        ("lora_alpha", LoraAlpha, None),
        ("sample_prompt", SamplePrompt, None),
        ("no_samples", NoSamples, False),
        ("max_new_tokens", MaxNewTokens, None),
        ("follow", Follow, True),
    )
]


@dataclass(frozen=True)
class TrainingCommon:
    """The values of :data:`COMMON_OPTIONS` one command was given."""

    values: dict[str, Any]

    @property
    def follow(self) -> bool:
        return bool(self.values["follow"])

    def request_parts(self) -> dict[str, Any]:
        """The keyword arguments ``build_sft_request``/``build_dpo_request`` take from them."""
        return {
            "options": _options(self.values),
            "sample_prompts": self.values["sample_prompt"],
            "no_samples": self.values["no_samples"],
            "max_new_tokens": self.values["max_new_tokens"],
        }


def with_common_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the options every training run takes: typer reads the returned
    function's signature (the command's own parameters, then :data:`COMMON_OPTIONS`) and the
    command receives their values as ``common``."""
    own = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "common"
    ]
    shared = {p.name for p in COMMON_OPTIONS}

    @functools.wraps(command)
    def with_options(**values: Any) -> None:
        common = TrainingCommon({k: values.pop(k) for k in list(values) if k in shared})
        command(**values, common=common)

    params = own + COMMON_OPTIONS
    with_options.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in params}
    del with_options.__wrapped__  # typer must read this signature, not the command's
    return with_options


@app.command("sft")
@with_common_options
def train_sft(
    ctx: typer.Context,
    base_model: Annotated[
        str | None,
        typer.Option(help="Hugging Face id or model directory (server default if omitted)"),
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(
            help="dataset id, CSV/JSONL file or folder of essays (server default if omitted)"
        ),
    ] = None,
    name: RunName = None,
    *,
    common: TrainingCommon,
) -> None:
    """Fine-tune a base model on a corpus of essays (SFT) and follow the run."""
    request = build_sft_request(
        base_model=base_model, corpus=corpus, name=name, **common.request_parts()
    )
    _submitted(ctx, api(ctx).submit_sft(request), common.follow)


@app.command("dpo")
@with_common_options
def train_dpo(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            help="SFT run id, registered model name, model directory or hub id",
            show_default=False,
        ),
    ],
    min_confidence: Annotated[
        float | None, typer.Option(help="pairs with confidence ≥ this (server default: 6)")
    ] = None,
    job: JobFilter = None,
    source: SourceFilter = None,
    name: RunName = None,
    beta: Annotated[float | None, typer.Option(help="DPO beta")] = None,
    loss_type: Annotated[
        Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "apo_zero"] | None,
        typer.Option(help="DPO loss"),
    ] = None,
    *,
    common: TrainingCommon,
) -> None:
    """Train a model on the preference pairs with DPO and follow the run."""
    request = build_dpo_request(
        model=model,
        min_confidence=min_confidence,
        job_ids=job or [],
        source=source,
        name=name,
        beta=beta,
        loss_type=loss_type,
        **common.request_parts(),
    )
    _submitted(ctx, api(ctx).submit_dpo(request), common.follow)


@app.command("status")
def train_status(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(min=1, help="run id", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow it to its end")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a training run; with --follow, follow it (exit 0 succeeded, 1 failed/cancelled)."""
    raise typer.Exit(RUNS.status(ctx, run_id, follow=follow, as_json=as_json))


@app.command("cancel")
def train_cancel(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(min=1, help="run id", show_default=False)],
) -> None:
    """Stop a run at its next step (a queued run at once); its last checkpoint is kept."""
    RUNS.cancel(ctx, run_id)


# -- on-policy rounds ---------------------------------------------------------------------------


class RoundsDisplay:
    """One status line: the round, its stage, pairs and the datagen cost so far."""

    def __init__(self) -> None:
        self.line = Text()

    def renderable(self) -> RenderableType:
        return self.line

    def update(self, run: RoundsRunOut, elapsed_s: float) -> None:
        self.line.plain = f"{self.plain(run)} · {duration(elapsed_s)}"

    @staticmethod
    def plain(run: RoundsRunOut) -> str:
        total = run.request.get("rounds", "?")
        head = f"rounds run {run.id} {run.status}: {len(run.rounds)}/{total} rounds"
        if run.rounds:
            r = run.rounds[-1]
            head += f" · round {r.number} {r.status} ({r.pairs} pairs)"
        return head + f" · ${run.cost_usd:.4f}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _eval_part(r: RoundOut, metric: str) -> str:
    """`` · eval run 9 · style 0.61 (from 0.55, improved)`` once the round was evaluated."""
    if r.eval_run_id is None:
        return ""
    part = f" · eval run {r.eval_run_id}"
    if r.improved is not None:
        verdict = "improved" if r.improved else "no improvement"
        part += f" · {metric} {_score(r.score)} (from {_score(r.start_score)}, {verdict})"
    return part


def rounds_lines(run: RoundsRunOut) -> list[str]:
    """One line per round: status, datagen job, DPO run, model, pairs, its evaluation."""
    metric = str((run.request.get("evaluation") or {}).get("metric", ""))
    lines = []
    for r in run.rounds:
        lines.append(
            f"round {r.number} {r.status}: generator {r.generator_model.get('name')!r} · "
            f"job {r.datagen_job_id} · dpo run {r.dpo_run_id} · model {r.model_id} · "
            f"{r.pairs} pairs ({r.pairs_trained} trained) · ${r.cost_usd:.4f}"
            + _eval_part(r, metric)
        )
    return lines


def _finish_rounds(run: RoundsRunOut) -> int:
    best = (
        ""
        if run.best_round is None
        else f" · best round {run.best_round} (model {run.best_model_id})"
    )
    out.print(
        escape(f"{RoundsDisplay.plain(run)} · stop {run.stop_reason} · model {run.model_id}{best}"),
        soft_wrap=True,
    )
    for line in rounds_lines(run):
        out.print(escape(line), soft_wrap=True)
    if run.error:
        err.print(f"error: {escape(one_line(run.error))}", soft_wrap=True)
    return EXIT_OK if run.status == "succeeded" else EXIT_FAILED


def _show_rounds(run: RoundsRunOut, followed: bool) -> int:
    if run.status in TERMINAL_STATUSES:
        return _finish_rounds(run)
    out.print(escape(RoundsDisplay.plain(run)), soft_wrap=True)
    for line in rounds_lines(run):
        out.print(escape(line), soft_wrap=True)
    return EXIT_OK


ROUNDS = LeasedCommands[RoundsRunOut](
    label=lambda run: f"rounds run {run.id}",
    fetch=lambda client, run_id: client.get_rounds(run_id),
    cancel_call=lambda client, run_id: client.cancel_rounds(run_id),
    display=RoundsDisplay,
    finish=_finish_rounds,
    show=_show_rounds,
    status_command="chatpgt train rounds-status {id}",
    stopping=" (stopping at its next step)",
    interval_s=2.0,
)


@app.command("rounds")
def train_rounds(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option(help="registry id or name of the SFT model", show_default=False)
    ],
    rounds: Annotated[int, typer.Option(min=1, help="how many rounds", show_default=False)],
    judge: Annotated[
        str, typer.Option("--judge", "-j", help="provider:model of the judge", show_default=False)
    ],
    topic: Annotated[
        list[str] | None, typer.Option("--topic", "-t", help="topic title, repeatable")
    ] = None,
    sample: Annotated[int | None, typer.Option(help="sample N topics from the pool")] = None,
    generator: Annotated[
        list[str] | None,
        typer.Option(
            "--generator", "-g", help="extra provider:model[:samples[:temperature]], repeatable"
        ),
    ] = None,
    policy_provider: Annotated[
        str | None,
        typer.Option(help="provider the current model writes through (default local)"),
    ] = None,
    samples_per_topic: Annotated[
        int | None, typer.Option(help="candidates of the current model per topic (default 2)")
    ] = None,
    temperature: Annotated[float | None, typer.Option(help="the current model's")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="tokens per candidate")] = None,
    pairing: Annotated[PairingRule | None, typer.Option(help="which matchups become pairs")] = None,
    accumulate: Annotated[
        bool, typer.Option(help="each round's DPO also trains on earlier rounds' pairs")
    ] = False,
    budget: Annotated[
        float | None, typer.Option("--budget", help="USD over all rounds' datagen")
    ] = None,
    min_confidence: Annotated[float | None, typer.Option(help="DPO pairs' confidence")] = None,
    dpo_max_steps: Annotated[int | None, typer.Option(help="cap each DPO run")] = None,
    name: Annotated[str | None, typer.Option(help="round n's model is <name>-r<n>")] = None,
    eval_metric: Annotated[
        EvalMetric | None,
        typer.Option(help="evaluate each round's model on this metric; stop when it stalls"),
    ] = None,
    eval_patience: Annotated[
        int | None, typer.Option(help="rounds in a row without improvement that stop (1)")
    ] = None,
    eval_min_improvement: Annotated[
        float | None, typer.Option(help="how much a round must beat the best so far by (0)")
    ] = None,
    eval_max_essays: Annotated[
        int | None, typer.Option(help="evaluate on the first N held-out essays")
    ] = None,
    eval_judge: Annotated[
        str | None, typer.Option(help="provider:model[:ab_probability] for win_rate")
    ] = None,
    eval_max_new_tokens: Annotated[
        int | None, typer.Option(help="tokens of each evaluation essay")
    ] = None,
    eval_style: Annotated[
        bool | None, typer.Option("--eval-style/--no-eval-style", help="style classifier")
    ] = None,
    eval_perplexity: Annotated[
        bool | None, typer.Option("--eval-perplexity/--no-eval-perplexity")
    ] = None,
    follow: Follow = True,
) -> None:
    """On-policy DPO: K rounds of {datagen with the current model → judge → DPO from it},
    each round's model evaluated with --eval-metric."""
    evaluation = build_rounds_evaluation(
        metric=eval_metric,
        patience=eval_patience,
        min_improvement=eval_min_improvement,
        max_essays=eval_max_essays,
        judge=eval_judge,
        max_new_tokens=eval_max_new_tokens,
        style=eval_style,
        perplexity=eval_perplexity,
    )
    request = build_rounds_request(
        model=model,
        rounds=rounds,
        topics=topic or [],
        sample=sample,
        judge=judge,
        generators=generator or [],
        policy={
            "provider": policy_provider,
            "samples_per_topic": samples_per_topic,
            "temperature": temperature,
            "max_tokens": max_tokens,
        },
        name=name,
        accumulate=accumulate,
        budget_usd=budget,
        min_confidence=min_confidence,
        dpo_max_steps=dpo_max_steps,
        pairing=pairing,
        evaluation=evaluation,
    )
    run = api(ctx).submit_rounds(request)
    err.print(f"submitted rounds run {run.id} ({escape(run.name)})")
    ROUNDS.submitted(ctx, run, follow)


@app.command("rounds-status")
def train_rounds_status(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(min=1, help="rounds run id", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow it to its end")] = False,
    as_json: AsJson = False,
) -> None:
    """Show a rounds run and its rounds (exit 1 when it failed or was cancelled)."""
    raise typer.Exit(ROUNDS.status(ctx, run_id, follow=follow, as_json=as_json))


@app.command("rounds-cancel")
def train_rounds_cancel(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(min=1, help="rounds run id", show_default=False)],
) -> None:
    """Stop a rounds run; its current datagen job, DPO run or eval run is cancelled."""
    ROUNDS.cancel(ctx, run_id)
