"""The ``chatpgt`` command: run the service, and drive it from a terminal through its HTTP API.

Processes: ``serve`` (uvicorn), ``worker`` (Celery), ``migrate`` (Alembic). ``keys`` manages API
keys in the database directly (an operator command). Everything else talks to the API at ``--api``
(``CHATPGT_API_URL``), with the key ``--api-key`` (``CHATPGT_API_KEY``) when one is given, through
``chatpgt.client``: ``topics``, ``datagen``, ``pairs``, ``train``, ``models``. Long work is
followed with a live progress display on stderr (plain progress lines when stderr is not a
terminal); results go to stdout.

Exit codes: 0 done (a followed job or run succeeded), 1 an error or a job/run that failed or was
cancelled, 2 a usage error, 130 detached from a job/run with Ctrl-C. An error is one line on
stderr, never a traceback (``--debug`` shows the traceback of an unexpected one).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, NoReturn, Protocol, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console, Group, RenderableType
from rich.filesize import decimal as filesize
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from chatpgt.client import DEFAULT_API_URL, ApiError, ApiUnreachable, ChatPGTClient, ClientError
from chatpgt.datagen.pairing import PairingRule
from chatpgt.datagen.schemas import DatagenJobCreate, DatagenJobView, StageCounts
from chatpgt.eval_cli import eval_app
from chatpgt.pairs.schemas import PairStats
from chatpgt.topics.schemas import FileImport, HFImport, TopicsCreate
from chatpgt.training.schemas import DPORequest, SFTRequest, TrainingRunOut

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DETACHED = 130
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
POLL_INTERVAL_S = 0.5
# Without a terminal, a progress line is printed when something changed, at most this often.
PLAIN_PROGRESS_EVERY_S = 5.0
SHOWN_TOPICS = 20

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class _App(typer.Typer):
    """A Typer app that turns every failure into one line on stderr and an exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ApiError as exc:
            if exc.status == 401:
                _fail(f"{exc} (give the key with --api-key or CHATPGT_API_KEY)")
            _fail(str(exc))
        except ClientError as exc:
            _fail(str(exc))
        except OSError as exc:  # a file that cannot be read or written, a port in use
            if self.show_tracebacks:
                raise
            _fail(str(exc))
        except Exception as exc:
            if self.show_tracebacks:
                raise
            _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))} (--debug shows more)")

    show_tracebacks = False


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _n(count: int, noun: str) -> str:
    """``1 pair``, ``2 pairs``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"error: {escape(_one_line(message))}", soft_wrap=True)
    sys.exit(code)


def _usage(message: str) -> NoReturn:
    """A usage error: one line and exit code 2."""
    err.print(f"error: {escape(_one_line(message))} (see --help)", soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def _validation_message(exc: ValidationError) -> str:
    """Pydantic errors as one line: ``field.path: message; ...``."""
    parts = []
    for error in exc.errors()[:3]:
        loc = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    more = exc.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


app = _App(
    name="chatpgt",
    help="Topics → candidate essays → blinded judge → preference pairs → SFT/DPO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
topics_app = typer.Typer(help="Add and import topics.", no_args_is_help=True)
datagen_app = typer.Typer(
    help="Generate preference pairs: submit, follow, cancel jobs.", no_args_is_help=True
)
pairs_app = typer.Typer(help="Statistics and export of the preference pairs.", no_args_is_help=True)
train_app = typer.Typer(help="SFT and DPO training runs.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys for clients, in the database (CHATPGT_DATABASE_URL) directly.",
    no_args_is_help=True,
)
app.add_typer(topics_app, name="topics")
app.add_typer(datagen_app, name="datagen")
app.add_typer(pairs_app, name="pairs")
app.add_typer(train_app, name="train")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(eval_app, name="eval")


@dataclass
class CliState:
    """What the global options set; the API client is made on first use and closed at exit."""

    api_url: str
    api_key: str | None = field(default=None, repr=False)
    _client: ChatPGTClient | None = field(default=None, repr=False)

    def client(self, ctx: typer.Context) -> ChatPGTClient:
        if self._client is None:
            self._client = ChatPGTClient(self.api_url, api_key=self.api_key)
            ctx.call_on_close(self._client.close)
        return self._client


def _client(ctx: typer.Context) -> ChatPGTClient:
    state = ctx.find_root().obj
    assert isinstance(state, CliState)
    return state.client(ctx)


@app.callback()
def main(
    ctx: typer.Context,
    api: Annotated[
        str,
        typer.Option(
            "--api", envvar="CHATPGT_API_URL", help="base URL of the ChatPGT API", show_default=True
        ),
    ] = DEFAULT_API_URL,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="CHATPGT_API_KEY",
            help="API key sent as Authorization: Bearer (see `chatpgt keys create`)",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of unexpected errors")] = (
        False
    ),
) -> None:
    """ChatPGT: turn topics into DPO preference pairs and train models on them.

    Commands other than serve, worker and migrate talk to the API at --api.
    """
    app.show_tracebacks = debug
    ctx.obj = CliState(api_url=api, api_key=api_key or None)


# ---------------------------------------------------------------------------------------------
# Processes: serve, worker, migrate
# ---------------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="interface to bind (default: CHATPGT_API_HOST, 127.0.0.1)", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="port (default: CHATPGT_API_PORT, 8000)", show_default=False
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the API (uvicorn api.main:app). Configure it with CHATPGT_* variables.

    On a loopback host (the default) clients on this machine need no API key unless
    CHATPGT_AUTH=required; on any other host every client needs one (`chatpgt keys create`).
    """
    import uvicorn

    from chatpgt.settings import get_settings

    settings = get_settings()
    host = host or settings.api_host
    port = port or settings.api_port
    # The API decides who needs a key from the host it was told it listens on: pass --host on
    # (to uvicorn's worker processes too), so `--host 0.0.0.0` asks every client for a key.
    os.environ["CHATPGT_API_HOST"] = host
    get_settings.cache_clear()
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_level=log_level)


QueueName = Literal["datagen", "gpu"]


def worker_argv(
    queue: QueueName, concurrency: int | None, loglevel: str = "INFO", hostname: str | None = None
) -> list[str]:
    """The ``celery worker`` arguments for a queue. ``gpu`` runs ``--pool solo`` with one
    process (CUDA and fork do not mix); ``datagen`` a prefork pool of ``concurrency`` processes
    (Celery's default, one per CPU, when None). Gossip, mingle and heartbeats are off, as in
    compose.yaml: state lives in Postgres, and workers need not know of each other."""
    argv = ["worker", "-Q", queue, "-n", hostname or f"{queue}@%h", "--loglevel", loglevel]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if queue == "gpu":
        if concurrency not in (None, 1):
            raise ValueError(
                "the gpu queue runs one task at a time (--pool solo); drop --concurrency"
            )
        return [*argv, "--pool", "solo", "-c", "1"]
    argv += ["--pool", "prefork"]
    return [*argv, "-c", str(concurrency)] if concurrency else argv


@app.command()
def worker(
    queue: Annotated[QueueName, typer.Option("--queue", "-Q", help="queue to consume")] = "datagen",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="processes (datagen only)")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="node name (default: QUEUE@%h)")
    ] = None,
) -> None:
    """Run a Celery worker: `datagen` for provider fan-out, `gpu` for training (pool solo)."""
    try:
        argv = worker_argv(queue, concurrency, loglevel, hostname)
    except ValueError as exc:
        _usage(str(exc))
    from workers.app import celery_app

    celery_app.worker_main(argv=argv)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
    database_url: Annotated[
        str | None,
        typer.Option(
            help="database to migrate (default: CHATPGT_DATABASE_URL)", show_default=False
        ),
    ] = None,
) -> None:
    """Upgrade the database schema with Alembic (the repository's alembic.ini and migrations/)."""
    from sqlalchemy.engine import make_url

    from chatpgt.db.migrate import MigrationsNotFound, upgrade
    from chatpgt.settings import get_settings

    url = database_url or get_settings().database_url
    shown = make_url(url).render_as_string(hide_password=True)
    err.print(f"migrating {escape(shown)} to {escape(revision)}")
    try:
        target = upgrade(url, revision)
    except MigrationsNotFound as exc:
        _fail(str(exc))
    out.print(f"database at revision {target}")


# ---------------------------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------------------------


@topics_app.command("add")
def topics_add(
    ctx: typer.Context,
    titles: Annotated[list[str], typer.Argument(help="topic titles", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="print the API's answer")] = False,
) -> None:
    """Add topics by title; titles already present (after normalisation) are kept once."""
    try:
        TopicsCreate(titles=titles)
    except ValidationError as exc:
        _usage(_validation_message(exc))
    result = _client(ctx).add_topics(titles)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    out.print(f"{_n(result.created, 'topic')} added, {result.existing} already present")
    for topic in result.topics[:SHOWN_TOPICS]:
        out.print(f"  #{topic.id}  {escape(topic.title)}")
    if len(result.topics) > SHOWN_TOPICS:
        out.print(f"  … and {len(result.topics) - SHOWN_TOPICS} more")


@topics_app.command("import")
def topics_import(
    ctx: typer.Context,
    path: Annotated[
        str | None,
        typer.Argument(
            help="a .txt (one title per line) or .csv file, read by the API process",
            show_default=False,
        ),
    ] = None,
    hf: Annotated[
        str | None,
        typer.Option("--hf", help="a Hugging Face dataset (hub name or local path)"),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="dataset split of --hf (default: train)")
    ] = None,
    config: Annotated[str | None, typer.Option(help="dataset configuration (--hf)")] = None,
    column: Annotated[
        str | None, typer.Option(help="column holding the title (default: title)")
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="column holding the real essay (makes corpus topics)")
    ] = None,
    as_corpus: Annotated[
        bool, typer.Option("--as-corpus", help="import as corpus topics (essay column: text)")
    ] = False,
    file_format: Annotated[
        Literal["txt", "csv"] | None,
        typer.Option("--format", help="file format; guessed from the extension"),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="read at most this many rows")] = None,
) -> None:
    """Import topics from a file or (with --hf) a Hugging Face dataset, in one transaction."""
    request = build_import_request(
        path=path,
        hf=hf,
        split=split,
        config=config,
        column=column,
        text_column=text_column,
        as_corpus=as_corpus,
        file_format=file_format,
        limit=limit,
    )
    result = _client(ctx).import_topics(request)
    out.print(
        f"{_n(result.rows, 'row')} read: {_n(result.created, 'topic')} created, "
        f"{result.existing} already present, {result.duplicates} duplicate, {result.skipped} blank"
        + (
            f", {_n(result.reference_texts_added, 'essay')} added to existing topics"
            if result.reference_texts_added
            else ""
        )
    )


def build_import_request(
    *,
    path: str | None,
    hf: str | None,
    split: str | None = None,
    config: str | None = None,
    column: str | None = None,
    text_column: str | None = None,
    as_corpus: bool = False,
    file_format: Literal["txt", "csv"] | None = None,
    limit: int | None = None,
) -> FileImport | HFImport:
    """The ``POST /topics/import`` body for a file ``path`` or a dataset ``hf`` (exactly one).

    A path that exists here is sent absolute: the API process reads it, and when it runs on this
    machine it resolves paths against its own working directory."""
    if (path is None) == (hf is None):
        _usage("give a file PATH or --hf DATASET (one of them)")
    common: dict[str, Any] = {"as_corpus": as_corpus}
    for key, value in (("column", column), ("text_column", text_column), ("limit", limit)):
        if value is not None:
            common[key] = value
    try:
        if hf is not None:
            if file_format is not None:
                _usage("--format is for files; a dataset's format is known")
            body = {"source": "hf", "dataset": hf, **common}
            if split is not None:
                body["split"] = split
            if config is not None:
                body["config"] = config
            return HFImport.model_validate(body)
        assert path is not None
        if split is not None or config is not None:
            _usage("--split and --config are for --hf datasets")
        local = Path(path).expanduser()
        sent = str(local.resolve()) if local.exists() else path
        body = {"source": "file", "path": sent, **common}
        if file_format is not None:
            body["format"] = file_format
        return FileImport.model_validate(body)
    except ValidationError as exc:
        _usage(_validation_message(exc))


# ---------------------------------------------------------------------------------------------
# Following long work (datagen jobs, training runs)
# ---------------------------------------------------------------------------------------------


class _HasStatus(Protocol):
    @property
    def status(self) -> str: ...


ViewT = TypeVar("ViewT", bound=_HasStatus)
ViewContraT = TypeVar("ViewContraT", bound=_HasStatus, contravariant=True)


class _Display(Protocol[ViewContraT]):
    """How one kind of long work is shown while it is followed."""

    def renderable(self) -> RenderableType: ...

    def update(self, view: ViewContraT, elapsed_s: float) -> None: ...

    def plain(self, view: ViewContraT) -> str: ...


@dataclass
class Follower(Generic[ViewT]):
    """Polls a job or run until it ends, showing progress; Ctrl-C offers to cancel or detach."""

    label: str
    fetch: Callable[[], ViewT]
    cancel: Callable[[], object]
    display: _Display[ViewT]
    resume_hint: str
    interval_s: float = POLL_INTERVAL_S
    _started: float = field(default_factory=time.monotonic)

    def run(self) -> ViewT:
        cancel_sent = False
        while True:
            try:
                return self._watch()
            except ApiUnreachable as exc:
                reason = f"{exc.reason} ({self.label} goes on; follow it with: {self.resume_hint})"
                raise ApiUnreachable(exc.base_url, reason) from exc
            except KeyboardInterrupt:
                if cancel_sent or not _ask_cancel(self.label):
                    err.print(
                        f"detached from {self.label}; it goes on. Follow it again with: "
                        f"{self.resume_hint}"
                    )
                    raise typer.Exit(EXIT_DETACHED) from None
                self.cancel()
                cancel_sent = True
                err.print(f"cancel requested; following {self.label} until it stops")

    def _watch(self) -> ViewT:
        if err.is_terminal:
            with Live(self.display.renderable(), console=err, refresh_per_second=8):
                return self._poll(lambda view: None)
        last: dict[str, Any] = {"line": "", "at": float("-inf")}

        def log(view: ViewT) -> None:
            line = self.display.plain(view)
            now = time.monotonic()
            if line != last["line"] and now - last["at"] >= PLAIN_PROGRESS_EVERY_S:
                err.print(escape(line), soft_wrap=True)
                last.update(line=line, at=now)

        return self._poll(log)

    def _poll(self, log: Callable[[ViewT], None]) -> ViewT:
        while True:
            view = self.fetch()
            self.display.update(view, time.monotonic() - self._started)
            if view.status in TERMINAL_STATUSES:
                return view
            log(view)
            time.sleep(self.interval_s)


def _ask_cancel(label: str) -> bool:
    """Ask whether to cancel or detach; no answer (no terminal, EOF, Ctrl-C again) detaches."""
    err.print()
    while True:
        try:
            answer = err.input(f"Cancel {label}, or detach and leave it running? \\[c/d] ")
        except (EOFError, KeyboardInterrupt):
            err.print()
            return False
        choice = answer.strip().lower()
        if choice in ("c", "cancel"):
            return True
        if choice in ("d", "detach", ""):
            return False


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


# ---------------------------------------------------------------------------------------------
# Datagen
# ---------------------------------------------------------------------------------------------


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


def _cost(job: DatagenJobView) -> str:
    budget = f" of ${job.budget_usd:.2f}" if job.budget_usd is not None else ""
    return f"${job.cost_usd:.4f}{budget}"


class JobDisplay:
    """Bars for generations and judgments, and a line with the status, pairs and cost."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            console=err,
        )
        self.generations = self.progress.add_task("generations", total=None, note="")
        self.judgments = self.progress.add_task("judgments", total=None, note="")
        self.line = Text()

    def renderable(self) -> RenderableType:
        return Group(self.progress, self.line)

    def update(self, job: DatagenJobView, elapsed_s: float) -> None:
        for task, counts in ((self.generations, job.generations), (self.judgments, job.judgments)):
            self.progress.update(
                task,
                total=counts.total or None,
                completed=_finished(counts),
                note=_stage_note(counts),
            )
        self.line.plain = (
            f"job {job.id} {job.status} · {_n(job.pairs, 'pair')} · {_n(job.ties, 'tie')}"
            f" · {_cost(job)}"
            f" · {_duration(elapsed_s)}"
        )

    def plain(self, job: DatagenJobView) -> str:
        g, j = job.generations, job.judgments
        return (
            f"job {job.id} {job.status}: generations {_finished(g)}/{g.total}, "
            f"judgments {_finished(j)}/{j.total}, {_n(job.pairs, 'pair')}, {_cost(job)}"
        )


def job_summary(job: DatagenJobView) -> str:
    """The final line of a job: status, pairs, work done, cost."""
    g, j = job.generations, job.judgments

    def stage(name: str, counts: StageCounts) -> str:
        note = _stage_note(counts)
        return f"{name} {counts.done}/{counts.total}" + (f" ({note})" if note else "")

    return (
        f"job {job.id} {job.status}: {_n(job.pairs, 'pair')} ({_n(job.ties, 'tie')}) from "
        f"{_n(job.topics, 'topic')}"
        f" · {stage('generations', g)} · {stage('judgments', j)} · {_cost(job)}"
    )


def _finish_job(job: DatagenJobView) -> int:
    out.print(escape(job_summary(job)), soft_wrap=True)
    if job.stop_reason and job.stop_reason != "cancelled":
        out.print(f"stopped: {escape(job.stop_reason)}", soft_wrap=True)
    if job.error:
        err.print(f"error: {escape(_one_line(job.error))}", soft_wrap=True)
    return EXIT_OK if job.status == "succeeded" else EXIT_FAILED


def parse_generator(spec: str) -> dict[str, Any]:
    """``provider:model[:samples[:temperature]]`` as a generator body. A model name may hold
    colons (``openrouter:org/model:free``); trailing numbers are read as samples, then
    temperature."""
    provider, sep, rest = spec.partition(":")
    if not sep or not provider or not rest:
        raise ValueError(f"{spec!r} is not provider:model[:samples[:temperature]]")
    parts = rest.split(":")
    numbers: list[str] = []
    while len(parts) > 1 and len(numbers) < 2 and _is_number(parts[-1]):
        numbers.insert(0, parts.pop())
    body: dict[str, Any] = {"provider": provider, "model": ":".join(parts)}
    if numbers:
        if not numbers[0].isdigit():
            raise ValueError(f"{spec!r}: samples must be a whole number, got {numbers[0]!r}")
        body["samples_per_topic"] = int(numbers[0])
    if len(numbers) == 2:
        body["temperature"] = float(numbers[1])
    return body


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.replace(".", "", 1).isdigit()


def parse_judge(spec: str) -> dict[str, Any]:
    """``provider:model`` as a judge body (the model name may hold colons)."""
    provider, sep, model = spec.partition(":")
    if not sep or not provider or not model:
        raise ValueError(f"{spec!r} is not provider:model")
    return {"provider": provider, "model": model}


def read_topics_file(path: Path) -> list[str]:
    """Titles from a text file, one per line; blank lines and lines starting with # are skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def build_job_request(
    *,
    titles: Sequence[str] = (),
    topic_ids: Sequence[int] = (),
    sample: int | None = None,
    seed: int | None = None,
    generators: Sequence[str],
    judge: str,
    pairing: PairingRule | None = None,
    budget_usd: float | None = None,
    max_tokens: int | None = None,
    corpus_pairs: bool = False,
) -> DatagenJobCreate:
    """The ``POST /datagen/jobs`` body from command-line values; a usage error when they do not
    make a valid request."""
    chosen = [name for name, given in (("titles", titles), ("ids", topic_ids)) if given]
    if sample is not None:
        chosen.append("sample")
    if len(chosen) != 1:
        _usage("choose topics one way: --topic/--topics-file, --topic-id, or --sample N")
    if seed is not None and sample is None:
        _usage("--seed goes with --sample")
    topics: dict[str, Any] = {"titles": list(titles)} if titles else {}
    if topic_ids:
        topics = {"ids": list(topic_ids)}
    if sample is not None:
        topics = {"sample": sample} | ({"seed": seed} if seed is not None else {})
    try:
        generator_bodies = [parse_generator(spec) for spec in generators]
        judge_body = parse_judge(judge)
    except ValueError as exc:
        _usage(str(exc))
    if max_tokens is not None:
        for body in generator_bodies:
            body["max_tokens"] = max_tokens
    request: dict[str, Any] = {
        "topics": topics,
        "generators": generator_bodies,
        "judge": judge_body,
    }
    if pairing is not None:
        request["pairing"] = pairing.value
    if budget_usd is not None:
        request["budget_usd"] = budget_usd
    if corpus_pairs:
        request["include_corpus_pairs"] = True
    try:
        return DatagenJobCreate.model_validate(request)
    except ValidationError as exc:
        _usage(_validation_message(exc))


def _follow_job(ctx: typer.Context, job: DatagenJobView) -> int:
    client = _client(ctx)
    final = Follower(
        label=f"job {job.id}",
        fetch=lambda: client.get_job(job.id),
        cancel=lambda: client.cancel_job(job.id),
        display=JobDisplay(),
        resume_hint=f"chatpgt datagen status {job.id} --follow",
    ).run()
    return _finish_job(final)


@datagen_app.command("run")
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
        str, typer.Option("--judge", "-j", help="provider:model of the judge", show_default=False)
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
    idempotency_key: Annotated[
        str | None, typer.Option(help="resubmitting with the same key replays the first job")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="follow the job to its end")
    ] = True,
) -> None:
    """Submit a datagen job and follow it: generations, judgments, pairs, cost.

    Exits 0 when the job succeeds, 1 when it fails or is cancelled. Ctrl-C asks whether to cancel
    the job or detach (130).
    """
    titles = list(topic or []) + (read_topics_file(topics_file) if topics_file else [])
    if topics_file is not None and not titles and not topic:
        _usage(f"{topics_file} holds no titles")
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
    )
    job, created = _client(ctx).create_job(request, idempotency_key=idempotency_key)
    if created:
        err.print(f"submitted job {job.id}: {_n(job.topics, 'topic')}")
    else:
        err.print(f"job {job.id} was already submitted with this idempotency key ({job.status})")
    if not follow:
        out.print(f"job {job.id} {job.status}")
        return
    raise typer.Exit(_follow_job(ctx, job))


@datagen_app.command("status")
def datagen_status(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(min=1, help="job id", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow it to its end")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's answer")] = False,
) -> None:
    """Show a job's status; with --follow, follow it (exit codes as for run)."""
    job = _client(ctx).get_job(job_id)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
        return
    if follow and job.status not in TERMINAL_STATUSES:
        raise typer.Exit(_follow_job(ctx, job))
    out.print(escape(job_summary(job)), soft_wrap=True)
    if job.stop_reason and job.stop_reason != "cancelled":
        out.print(f"stopped: {escape(job.stop_reason)}", soft_wrap=True)
    if job.error:
        out.print(f"error: {escape(_one_line(job.error))}", soft_wrap=True)
    if follow:
        raise typer.Exit(EXIT_OK if job.status == "succeeded" else EXIT_FAILED)


@datagen_app.command("cancel")
def datagen_cancel(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(min=1, help="job id", show_default=False)],
) -> None:
    """Cancel a job: a queued job at once, a running one after its requests in flight."""
    job = _client(ctx).cancel_job(job_id)
    note = "" if job.status in TERMINAL_STATUSES else " (stopping; what is done is kept)"
    out.print(f"job {job.id} {job.status}{note}")


# ---------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------

MinConfidence = Annotated[
    float | None, typer.Option(min=0, max=10, help="keep pairs with confidence ≥ this")
]
JobFilter = Annotated[
    list[int] | None, typer.Option("--job", help="only pairs of this job, repeatable")
]
ModelFilter = Annotated[str | None, typer.Option(help="only pairs with this chosen/rejected model")]
SourceFilter = Annotated[Literal["judged", "corpus"] | None, typer.Option(help="pair source")]


def print_pair_stats(stats: PairStats, console: Console) -> None:
    """The statistics as a few readable tables."""
    c = stats.counts
    console.print(
        f"[bold]{_n(c.total, 'pair')}[/bold] ({c.judged} judged, {c.corpus} corpus)",
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


@pairs_app.command("stats")
def pairs_stats(
    ctx: typer.Context,
    min_confidence: MinConfidence = None,
    job: JobFilter = None,
    model: ModelFilter = None,
    source: SourceFilter = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's answer")] = False,
) -> None:
    """Counts, confidence histogram, model win rates, lengths, judge consistency and cost."""
    stats = _client(ctx).pair_stats(
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


@contextmanager
def _export_progress(fmt: str) -> Iterator[Callable[[int, int], None]]:
    """A spinner with rows, bytes and speed on a terminal; nothing otherwise."""
    if not err.is_terminal:
        yield lambda rows, size: None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("exporting {task.fields[rows]} rows · {task.fields[size]}"),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task(fmt, total=None, rows=0, size=filesize(0))
    with progress:
        yield lambda rows, size: progress.update(
            task, completed=size, rows=rows, size=filesize(size)
        )


@pairs_app.command("export")
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
    client = _client(ctx)
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
            err.print(f"wrote {_n(counter.rows, 'pair')} ({filesize(size)})")
            return
        target = Path(out_path).expanduser()
        if target.is_dir():
            _usage(f"--out {out_path} is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as handle, _export_progress(fmt) as report:
                for chunk in chunks:
                    handle.write(chunk)
                    counter.feed(chunk)
                    size += len(chunk)
                    report(counter.rows, size)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    out.print(f"wrote {_n(counter.rows, 'pair')} ({filesize(size)}) to {escape(str(target))}")


# ---------------------------------------------------------------------------------------------
# Training and models
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainingOptions:
    """Command-line values of the settings common to SFT and DPO; None means "server default"."""

    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    learning_rate: float | None = None
    lr_scheduler: str | None = None
    warmup_ratio: float | None = None
    max_length: int | None = None
    max_steps: int | None = None
    eval_fraction: float | None = None
    seed: int | None = None
    save_steps: int | None = None
    logging_steps: int | None = None
    lora: bool = False
    lora_r: int | None = None
    lora_alpha: int | None = None

    def hyperparameters(self) -> dict[str, Any]:
        """The ``hyperparameters`` object with the values that were given."""
        names = {
            "epochs": self.epochs,
            "per_device_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "learning_rate": self.learning_rate,
            "lr_scheduler": self.lr_scheduler,
            "warmup_ratio": self.warmup_ratio,
            "max_length": self.max_length,
            "max_steps": self.max_steps,
            "eval_fraction": self.eval_fraction,
            "seed": self.seed,
            "save_steps": self.save_steps,
            "logging_steps": self.logging_steps,
        }
        body: dict[str, Any] = {key: value for key, value in names.items() if value is not None}
        lora = {
            key: value
            for key, value in (("r", self.lora_r), ("alpha", self.lora_alpha))
            if value is not None
        }
        if self.lora or lora:
            body["lora"] = lora
        return body


def _samples_body(
    prompts: Sequence[str] | None, no_samples: bool, max_new_tokens: int | None
) -> dict[str, Any] | None:
    if no_samples and prompts:
        _usage("--no-samples and --sample-prompt contradict each other")
    body: dict[str, Any] = {}
    if no_samples:
        body["prompts"] = []
    elif prompts:
        body["prompts"] = list(prompts)
    if max_new_tokens is not None:
        body["max_new_tokens"] = max_new_tokens
    return body or None


def build_sft_request(
    *,
    base_model: str | None = None,
    corpus: str | None = None,
    name: str | None = None,
    options: TrainingOptions | None = None,
    sample_prompts: Sequence[str] | None = None,
    no_samples: bool = False,
    max_new_tokens: int | None = None,
) -> SFTRequest:
    """The ``POST /train/sft`` body with only the given values set (a usage error if invalid)."""
    body: dict[str, Any] = {}
    for key, value in (("base_model", base_model), ("corpus", corpus), ("name", name)):
        if value is not None:
            body[key] = value
    hyper = (options or TrainingOptions()).hyperparameters()
    if hyper:
        body["hyperparameters"] = hyper
    samples = _samples_body(sample_prompts, no_samples, max_new_tokens)
    if samples is not None:
        body["samples"] = samples
    try:
        return SFTRequest.model_validate(body)
    except ValidationError as exc:
        _usage(_validation_message(exc))


def build_dpo_request(
    *,
    model: str,
    min_confidence: float | None = None,
    job_ids: Sequence[int] = (),
    source: Literal["judged", "corpus"] | None = None,
    name: str | None = None,
    beta: float | None = None,
    loss_type: str | None = None,
    options: TrainingOptions | None = None,
    sample_prompts: Sequence[str] | None = None,
    no_samples: bool = False,
    max_new_tokens: int | None = None,
) -> DPORequest:
    """The ``POST /train/dpo`` body with only the given values set (a usage error if invalid).
    ``model`` is a finished SFT run id, a registered model name, a directory or a hub id."""
    body: dict[str, Any] = {"model": model}
    pairs: dict[str, Any] = {}
    if min_confidence is not None:
        pairs["min_confidence"] = min_confidence
    if job_ids:
        pairs["job_ids"] = list(job_ids)
    if source is not None:
        pairs["source"] = source
    if pairs:
        body["pairs"] = pairs
    if name is not None:
        body["name"] = name
    hyper = (options or TrainingOptions()).hyperparameters()
    if beta is not None:
        hyper["beta"] = beta
    if loss_type is not None:
        hyper["loss_type"] = loss_type
    if hyper:
        body["hyperparameters"] = hyper
    samples = _samples_body(sample_prompts, no_samples, max_new_tokens)
    if samples is not None:
        body["samples"] = samples
    try:
        return DPORequest.model_validate(body)
    except ValidationError as exc:
        _usage(_validation_message(exc))


def _latest_loss(run: TrainingRunOut) -> float | None:
    latest = run.metrics.get("latest") or {}
    loss = latest.get("loss", latest.get("train_loss"))
    return float(loss) if isinstance(loss, int | float) else None


class RunDisplay:
    """A bar of step/total with loss, epoch and the server's ETA, and a status line."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("step {task.fields[step]}/{task.fields[total_text]}"),
            TextColumn("{task.fields[note]}"),
            console=err,
        )
        self.task = self.progress.add_task("", total=None, step=0, total_text="?", note="")
        self.line = Text()

    def renderable(self) -> RenderableType:
        return Group(self.progress, self.line)

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
        self.line.plain = f"{run.status}{waiting} · {run.name} · {_duration(elapsed_s)}"

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
            parts.append(f"ETA {_duration(p.eta_s)}")
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
        err.print(f"error: {escape(_one_line(run.error))}", soft_wrap=True)
    return EXIT_OK if run.status == "succeeded" else EXIT_FAILED


def _follow_run(ctx: typer.Context, run: TrainingRunOut) -> int:
    client = _client(ctx)
    final = Follower(
        label=f"{run.kind} run {run.id}",
        fetch=lambda: client.get_run(run.id),
        cancel=lambda: client.cancel_run(run.id),
        display=RunDisplay(),
        resume_hint=f"chatpgt train status {run.id} --follow",
        interval_s=1.0,
    ).run()
    return _finish_run(final)


def _submitted(ctx: typer.Context, run: TrainingRunOut, follow: bool) -> None:
    err.print(f"submitted {run.kind} run {run.id} ({escape(run.name)})")
    if not follow:
        out.print(f"{run.kind} run {run.id} {run.status}")
        return
    raise typer.Exit(_follow_run(ctx, run))


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


@train_app.command("sft")
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
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    grad_accum: GradAccum = None,
    learning_rate: LearningRate = None,
    lr_scheduler: Scheduler = None,
    warmup_ratio: WarmupRatio = None,
    max_length: MaxLength = None,
    max_steps: MaxSteps = None,
    eval_fraction: EvalFraction = None,
    seed: Seed = None,
    save_steps: SaveSteps = None,
    logging_steps: LoggingSteps = None,
    lora: Lora = False,
    lora_r: LoraR = None,
    lora_alpha: LoraAlpha = None,
    sample_prompt: SamplePrompt = None,
    no_samples: NoSamples = False,
    max_new_tokens: MaxNewTokens = None,
    follow: Follow = True,
) -> None:
    """Fine-tune a base model on a corpus of essays (SFT) and follow the run."""
    request = build_sft_request(
        base_model=base_model,
        corpus=corpus,
        name=name,
        options=TrainingOptions(
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            learning_rate=learning_rate,
            lr_scheduler=lr_scheduler,
            warmup_ratio=warmup_ratio,
            max_length=max_length,
            max_steps=max_steps,
            eval_fraction=eval_fraction,
            seed=seed,
            save_steps=save_steps,
            logging_steps=logging_steps,
            lora=lora,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
        ),
        sample_prompts=sample_prompt,
        no_samples=no_samples,
        max_new_tokens=max_new_tokens,
    )
    _submitted(ctx, _client(ctx).submit_sft(request), follow)


@train_app.command("dpo")
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
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    grad_accum: GradAccum = None,
    learning_rate: LearningRate = None,
    lr_scheduler: Scheduler = None,
    warmup_ratio: WarmupRatio = None,
    max_length: MaxLength = None,
    max_steps: MaxSteps = None,
    eval_fraction: EvalFraction = None,
    seed: Seed = None,
    save_steps: SaveSteps = None,
    logging_steps: LoggingSteps = None,
    lora: Lora = False,
    lora_r: LoraR = None,
    lora_alpha: LoraAlpha = None,
    sample_prompt: SamplePrompt = None,
    no_samples: NoSamples = False,
    max_new_tokens: MaxNewTokens = None,
    follow: Follow = True,
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
        options=TrainingOptions(
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            learning_rate=learning_rate,
            lr_scheduler=lr_scheduler,
            warmup_ratio=warmup_ratio,
            max_length=max_length,
            max_steps=max_steps,
            eval_fraction=eval_fraction,
            seed=seed,
            save_steps=save_steps,
            logging_steps=logging_steps,
            lora=lora,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
        ),
        sample_prompts=sample_prompt,
        no_samples=no_samples,
        max_new_tokens=max_new_tokens,
    )
    _submitted(ctx, _client(ctx).submit_dpo(request), follow)


@train_app.command("status")
def train_status(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(min=1, help="run id", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow it to its end")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's answer")] = False,
) -> None:
    """Show a training run; with --follow, follow it (exit 0 succeeded, 1 failed/cancelled)."""
    run = _client(ctx).get_run(run_id)
    if as_json:
        typer.echo(run.model_dump_json(indent=2))
        return
    if follow and run.status not in TERMINAL_STATUSES:
        raise typer.Exit(_follow_run(ctx, run))
    if run.status in TERMINAL_STATUSES:
        code = _finish_run(run)
    else:
        out.print(escape(RunDisplay().plain(run)), soft_wrap=True)
        code = EXIT_OK
    for sample in run.samples[:3]:
        out.print(f"\n[bold]{escape(sample.prompt)}[/bold]\n{escape(sample.text)}", soft_wrap=True)
    if follow:
        raise typer.Exit(code)


@train_app.command("cancel")
def train_cancel(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(min=1, help="run id", show_default=False)],
) -> None:
    """Stop a run at its next step (a queued run at once); its last checkpoint is kept."""
    run = _client(ctx).cancel_run(run_id)
    note = "" if run.status in TERMINAL_STATUSES else " (stopping at the next step)"
    out.print(f"{run.kind} run {run.id} {run.status}{note}")


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print the models as JSON lines")] = False,
) -> None:
    """Every registered model: base models and those training produced, with lineage."""
    models = list(_client(ctx).iter_models())
    if as_json:
        for m in models:
            typer.echo(m.model_dump_json())
        return
    if not models:
        out.print("no models registered yet")
        return
    table = Table()
    for name in ("id", "name", "kind", "from", "run", "created", "path"):
        table.add_column(name, overflow="fold")
    by_id = {m.id: m for m in models}
    for m in models:
        parent = by_id.get(m.parent_id) if m.parent_id is not None else None
        table.add_row(
            str(m.id),
            escape(m.name),
            m.kind,
            escape(parent.name) if parent else (str(m.parent_id) if m.parent_id else ""),
            str(m.run_id or ""),
            m.created_at.strftime("%Y-%m-%d %H:%M"),
            escape(m.path),
        )
    out.print(table)


# ---------------------------------------------------------------------------------------------
# API keys (the database directly, like `migrate`: an operator's command, no API needed)
# ---------------------------------------------------------------------------------------------

KeysResult = TypeVar("KeysResult")
KeysDatabase = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="database holding the keys (default: CHATPGT_DATABASE_URL)",
        show_default=False,
    ),
]


def _with_keys_db(database_url: str | None, work: Callable[[Any], Any]) -> Any:
    """Run ``work(session)`` on the keys' database in one transaction and return its result.

    An embedded SQLite database is migrated first, as the API does at start-up."""
    import asyncio

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from chatpgt.db.session import make_engine, make_sessionmaker
    from chatpgt.errors import ChatPGTError
    from chatpgt.settings import get_settings

    url = database_url or get_settings().database_url
    shown = make_url(url).render_as_string(hide_password=True)

    async def run() -> Any:
        engine = make_engine(url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        if url.startswith("sqlite"):
            from chatpgt.db.migrate import upgrade

            upgrade(url)
        return asyncio.run(run())
    except ChatPGTError as exc:
        _fail(exc.detail)
    except DBAPIError as exc:
        reason = _one_line(str(exc.orig) if exc.orig is not None else str(exc))
        _fail(f"database {shown}: {reason} (is it migrated? `chatpgt migrate`)")


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else ""


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="who or what the key is for")],
    scope: Annotated[
        Literal["read", "write"],
        typer.Option("--scope", help="read: GET routes only; write: every route"),
    ] = "read",
    database_url: KeysDatabase = None,
) -> None:
    """Create a key. The key is printed once, on stdout, and stored only as a hash."""
    from chatpgt.auth import service
    from chatpgt.auth.schemas import ApiKeyCreate

    try:
        request = ApiKeyCreate(name=name, scope=scope)
    except ValidationError as exc:
        _usage(_validation_message(exc))
    created = _with_keys_db(database_url, lambda session: service.create_key(session, request))
    err.print(
        f"created {created.scope} key {created.id} {escape(repr(created.name))} "
        f"(prefix {created.prefix}); it is shown once, keep it now:",
        soft_wrap=True,
    )
    typer.echo(created.key.get_secret_value())


@keys_app.command("list")
def keys_list(
    database_url: KeysDatabase = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the keys as JSON lines")] = False,
) -> None:
    """Every key: id, name, scope, prefix, when it was made, last used and revoked. No secrets."""
    from chatpgt.auth import service

    keys = _with_keys_db(database_url, service.list_keys)
    if as_json:
        for key in keys:
            typer.echo(key.model_dump_json())
        return
    if not keys:
        out.print("no API keys yet (chatpgt keys create --name NAME --scope read|write)")
        return
    table = Table()
    for column in ("id", "name", "scope", "prefix", "created", "last used", "revoked"):
        table.add_column(column, overflow="fold")
    for key in keys:
        table.add_row(
            str(key.id),
            escape(key.name),
            key.scope,
            key.prefix,
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.revoked_at),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    id_or_prefix: Annotated[
        str, typer.Argument(metavar="ID_OR_PREFIX", help="the key's id or prefix")
    ],
    database_url: KeysDatabase = None,
) -> None:
    """Revoke a key. API processes refuse it within CHATPGT_AUTH_CACHE_TTL_S seconds (5 s)."""
    from chatpgt.auth import service

    key, revoked_now = _with_keys_db(
        database_url, lambda session: service.revoke_key(session, id_or_prefix)
    )
    if revoked_now:
        out.print(f"revoked key {key.id} {escape(repr(key.name))} (prefix {key.prefix})")
    else:
        out.print(
            f"key {key.id} {escape(repr(key.name))} was revoked already, at {_when(key.revoked_at)}"
        )


if __name__ == "__main__":
    app()
