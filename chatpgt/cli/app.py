"""The ``chatpgt`` command: its global options, its command groups, and how it fails.

A command group is a module of this package with a ``typer.Typer`` named ``app``; adding one is
an import and an ``add_typer`` line below. Every failure, Typer's and Click's usage errors
included, is one line on stderr (``error: ...``) and an exit code: 1 an error, 2 a usage error.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

try:  # Typer 0.2x parses with a vendored copy of Click; older releases with Click itself.
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

from chatpgt.api_client import DEFAULT_API_URL, ApiError, ClientError, InvalidRequest
from chatpgt.cli import datagen, evaluation, keys, models, pairs, processes, topics, train
from chatpgt.cli.context import CliState
from chatpgt.cli.output import EXIT_USAGE, fail, one_line, usage_line
from chatpgt.errors import ChatPGTError

PROG_NAME = "chatpgt"
ABORTS = (typer.Abort, getattr(click_errors, "Abort", typer.Abort))


class CliApp(typer.Typer):
    """A Typer app that turns every failure into one line on stderr and an exit code."""

    show_tracebacks = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("prog_name", PROG_NAME)
        kwargs["standalone_mode"] = False
        try:
            code = super().__call__(*args, **kwargs)
        except click_errors.NoArgsIsHelpError as exc:
            # A group called without a command: its help, exit code 2. (Typer's rich help is
            # printed to stdout as the error is made; a plain one is the error's message.)
            if exc.format_message().strip():
                typer.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except click_errors.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else PROG_NAME
            usage_line(exc.format_message(), command)
            sys.exit(EXIT_USAGE)
        except click_errors.ClickException as exc:  # e.g. a file option that cannot be opened
            fail(exc.format_message())
        except ABORTS:  # end of input at a prompt
            fail("aborted")
        except InvalidRequest as exc:
            usage_line(str(exc))
            sys.exit(EXIT_USAGE)
        except ApiError as exc:
            if exc.status == 401:
                fail(f"{exc} (give the key with --api-key or CHATPGT_API_KEY)")
            fail(str(exc))
        except ClientError as exc:
            fail(str(exc))
        except ChatPGTError as exc:  # the library's own refusals (`keys`: no such key)
            fail(exc.detail)
        except OSError as exc:  # a file that cannot be read or written, a port in use
            if self.show_tracebacks:
                raise
            fail(str(exc))
        except Exception as exc:
            if self.show_tracebacks:
                raise
            fail(f"unexpected {type(exc).__name__}: {one_line(str(exc))} (--debug shows more)")
        sys.exit(code if isinstance(code, int) else 0)


app = CliApp(
    name=PROG_NAME,
    help="Topics → candidate essays → blinded judge → preference pairs → SFT/DPO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(processes.app)  # serve, worker, migrate: top-level commands
app.add_typer(topics.app, name="topics")
app.add_typer(datagen.app, name="datagen")
app.add_typer(pairs.app, name="pairs")
app.add_typer(train.app, name="train")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(evaluation.app, name="eval")


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

    Commands other than serve, worker, migrate and keys talk to the API at --api.
    """
    app.show_tracebacks = debug
    ctx.obj = CliState(api_url=api, api_key=api_key or None)
