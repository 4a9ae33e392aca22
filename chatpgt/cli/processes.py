"""``serve``, ``worker`` and ``migrate``: the service's own processes (no API needed).

``serve`` and ``worker`` replace this process (``os.execv``) with uvicorn or Celery, started by
module name (``chatpgt.launch``): the library never imports the ``api`` or ``workers`` packages.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from chatpgt.cli.output import err, fail, out, usage
from chatpgt.launch import QueueName, api_command, worker_command

app = typer.Typer()


def _exec(argv: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


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
    from chatpgt.settings import get_settings

    settings = get_settings()
    host = host or settings.api_host
    port = port or settings.api_port
    # The API decides who needs a key from the host it was told it listens on: pass --host on
    # (to uvicorn's worker processes too), so `--host 0.0.0.0` asks every client for a key.
    os.environ["CHATPGT_API_HOST"] = host
    _exec(api_command(host=host, port=port, workers=workers, log_level=log_level))


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
        argv = worker_command(queue, concurrency, loglevel, hostname)
    except ValueError as exc:
        usage(str(exc))
    _exec(argv)


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
        fail(str(exc))
    out.print(f"database at revision {target}")
