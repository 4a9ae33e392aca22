"""The one shape of every command group over a leased run (datagen jobs, training runs, rounds
runs, dedup scans): submit → follow with a live bar → print the outcome; ``status [--follow]
[--json]``; ``cancel``. A group states how its kind is fetched, shown and ended in a
:class:`LeasedCommands`; the commands themselves keep their own options and help."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import typer
from rich.markup import escape

from chatpgt.api_client import ChatPGTClient
from chatpgt.cli.context import api
from chatpgt.cli.output import (
    EXIT_OK,
    POLL_INTERVAL_S,
    TERMINAL_STATUSES,
    Display,
    Follower,
    out,
)


class LeasedView(Protocol):
    """What the API answers for a leased run (a pydantic model)."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    def model_dump_json(self, *, indent: int | None = None) -> str: ...


ViewT = TypeVar("ViewT", bound=LeasedView)


@dataclass(frozen=True)
class LeasedCommands(Generic[ViewT]):
    """How the CLI follows, shows and cancels one kind of leased run.

    ``label``: how a line names a run ("sft run 3", "job 5"); ``fetch``/``cancel``: the API
    calls; ``display``: the live bar (a new one per follow); ``finish``: prints a finished run
    and returns the exit code; ``show``: prints a run that is not followed (``(view,
    followed)`` → exit code; default: ``finish`` when finished, else the display's plain line);
    ``status_command``: the command that follows a run again (``{id}`` filled in);
    ``stopping``: what a cancel not yet in effect adds to its line; ``json_code``: the exit
    code of ``status --json``."""

    label: Callable[[ViewT], str]
    fetch: Callable[[ChatPGTClient, int], ViewT]
    cancel_call: Callable[[ChatPGTClient, int], ViewT]
    display: Callable[[], Display[ViewT]]
    finish: Callable[[ViewT], int]
    status_command: str
    stopping: str
    interval_s: float = POLL_INTERVAL_S
    show: Callable[[ViewT, bool], int] | None = None
    offer_cancel: bool = True
    json_code: Callable[[ViewT], int] = lambda view: EXIT_OK

    def follow(self, ctx: typer.Context, view: ViewT) -> ViewT:
        """Poll until the run ends, with the live bar; Ctrl-C offers to cancel (when
        ``offer_cancel``) or detaches (exit 130)."""
        return self.follow_with(api(ctx), view)

    def follow_with(self, client: ChatPGTClient, view: ViewT) -> ViewT:
        """:meth:`follow` with a client of the caller's (the demo's)."""
        return Follower(
            label=self.label(view),
            fetch=lambda: self.fetch(client, view.id),
            cancel=(lambda: self.cancel_call(client, view.id)) if self.offer_cancel else None,
            display=self.display(),
            resume_hint=f"{self.status_command.format(id=view.id)} --follow",
            interval_s=self.interval_s,
        ).run()

    def follow_to_end(self, ctx: typer.Context, view: ViewT) -> int:
        return self.finish(self.follow(ctx, view))

    def submitted(self, ctx: typer.Context, view: ViewT, follow: bool) -> None:
        """After the submit's own note: follow the run to its end (exit with its code), or
        print its status line and return."""
        if not follow:
            out.print(f"{self.label(view)} {view.status}")
            return
        raise typer.Exit(self.follow_to_end(ctx, view))

    def status(self, ctx: typer.Context, row_id: int, *, follow: bool, as_json: bool) -> int:
        """``status``: the run as JSON, followed to its end, or shown as it is; the exit code."""
        view = self.fetch(api(ctx), row_id)
        if as_json:
            typer.echo(view.model_dump_json(indent=2))
            return self.json_code(view)
        if follow and view.status not in TERMINAL_STATUSES:
            return self.follow_to_end(ctx, view)
        if self.show is not None:
            return self.show(view, follow)
        if view.status in TERMINAL_STATUSES:
            return self.finish(view)
        out.print(escape(self.display().plain(view)), soft_wrap=True)
        return EXIT_OK

    def cancel(self, ctx: typer.Context, row_id: int) -> None:
        """``cancel``: one line, the run's status and, while it stops, ``stopping``."""
        view = self.cancel_call(api(ctx), row_id)
        note = "" if view.status in TERMINAL_STATUSES else self.stopping
        out.print(f"{self.label(view)} {view.status}{note}")
