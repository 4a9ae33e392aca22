"""What every command prints the same way: errors as one line, counts, durations, costs, and the
progress of long work (a followed job or run, an export).

Results go to stdout (``out``); progress, notes and errors to stderr (``err``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import typer
from rich.console import Console, Group, RenderableType
from rich.filesize import decimal as filesize
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from chatpgt.api_client import ApiUnreachable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DETACHED = 130
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
POLL_INTERVAL_S = 0.5
# Without a terminal, a progress line is printed when something changed, at most this often.
PLAIN_PROGRESS_EVERY_S = 5.0

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


# -- text ---------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(text.split())


def plural(count: int, noun: str) -> str:
    """``1 pair``, ``2 pairs``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def duration(seconds: float | None) -> str:
    """``7s``, ``1m 05s``, ``2h 03m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def cost(spent_usd: float, budget_usd: float | None = None) -> str:
    """``$0.0123`` or ``$0.0123 of $2.00``."""
    budget = f" of ${budget_usd:.2f}" if budget_usd is not None else ""
    return f"${spent_usd:.4f}{budget}"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else ""


# -- errors -------------------------------------------------------------------------------------


def error_line(message: str) -> None:
    """``error: MESSAGE`` as one line on stderr."""
    err.print(f"error: {escape(one_line(message))}", soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    error_line(message)
    sys.exit(code)


def usage_line(message: str, help_command: str | None = None) -> None:
    """A usage error as one line: ``error: MESSAGE (see COMMAND --help)``."""
    hint = f"`{help_command} --help`" if help_command else "--help"
    err.print(f"error: {escape(one_line(message))} (see {escape(hint)})", soft_wrap=True)


def usage(message: str) -> NoReturn:
    """A usage error: one line and exit code 2."""
    usage_line(message)
    raise typer.Exit(EXIT_USAGE)


# -- following long work ------------------------------------------------------------------------


class HasStatus(Protocol):
    @property
    def status(self) -> str: ...


ViewT = TypeVar("ViewT", bound=HasStatus)
ViewContraT = TypeVar("ViewContraT", bound=HasStatus, contravariant=True)


class Display(Protocol[ViewContraT]):
    """How one kind of long work is shown while it is followed."""

    def renderable(self) -> RenderableType: ...

    def update(self, view: ViewContraT, elapsed_s: float) -> None: ...

    def plain(self, view: ViewContraT) -> str: ...


class BarDisplay:
    """The look of a followed run: bars (a rich ``Progress`` of ``columns`` on stderr) above a
    status line; a kind's display adds its tasks and its ``update``/``plain``."""

    def __init__(self, *columns: ProgressColumn | str) -> None:
        self.progress = Progress(*columns, console=err)
        self.line = Text()

    def renderable(self) -> RenderableType:
        return Group(self.progress, self.line)


@dataclass
class Follower(Generic[ViewT]):
    """Polls a job or run until it ends, showing progress; Ctrl-C offers to cancel or detach
    (detaches at once when there is no ``cancel`` to offer)."""

    label: str
    fetch: Callable[[], ViewT]
    cancel: Callable[[], object] | None
    display: Display[ViewT]
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
                if self.cancel is None or cancel_sent or not ask_cancel(self.label):
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


def ask_cancel(label: str) -> bool:
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


@contextmanager
def transfer_progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """A spinner with rows, bytes and speed on a terminal (``report(rows, size)``); nothing
    otherwise."""
    if not err.is_terminal:
        yield lambda rows, size: None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn(f"{what} {{task.fields[rows]}} rows · {{task.fields[size]}}"),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task(what, total=None, rows=0, size=filesize(0))
    with progress:
        yield lambda rows, size: progress.update(
            task, completed=size, rows=rows, size=filesize(size)
        )
