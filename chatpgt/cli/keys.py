"""``chatpgt keys``: API keys for clients, through the auth service on the database given by
``--database-url`` (``CHATPGT_DATABASE_URL``): an operator's command, like ``migrate``, that needs
no running API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from chatpgt.api_client.requests import validation_message
from chatpgt.cli.output import err, out, usage, when

if TYPE_CHECKING:
    from chatpgt.auth.service import KeyAdmin

app = typer.Typer(
    help="API keys for clients, in the database (CHATPGT_DATABASE_URL); no API needed.",
    no_args_is_help=True,
)

KeysDatabase = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="database holding the keys (default: CHATPGT_DATABASE_URL)",
        show_default=False,
    ),
]


def _admin(database_url: str | None) -> KeyAdmin:
    from chatpgt.auth.service import KeyAdmin
    from chatpgt.settings import get_settings

    return KeyAdmin(database_url or get_settings().database_url)


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="who or what the key is for")],
    scope: Annotated[
        Literal["read", "write"],
        typer.Option("--scope", help="read: GET routes only; write: every route"),
    ] = "read",
    database_url: KeysDatabase = None,
) -> None:
    """Create a key. The key is printed once, on stdout, and stored only as a hash."""
    from chatpgt.auth.schemas import ApiKeyCreate

    try:
        request = ApiKeyCreate(name=name, scope=scope)
    except ValidationError as exc:
        usage(validation_message(exc))
    created = _admin(database_url).create(request)
    err.print(
        f"created {created.scope} key {created.id} {escape(repr(created.name))} "
        f"(prefix {created.prefix}); it is shown once, keep it now:",
        soft_wrap=True,
    )
    typer.echo(created.key.get_secret_value())


@app.command("list")
def keys_list(
    database_url: KeysDatabase = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the keys as JSON lines")] = False,
) -> None:
    """Every key: id, name, scope, prefix, when it was made, last used and revoked. No secrets."""
    keys = _admin(database_url).all_keys()
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
            when(key.created_at),
            when(key.last_used_at),
            when(key.revoked_at),
        )
    out.print(table)


@app.command("revoke")
def keys_revoke(
    id_or_prefix: Annotated[
        str, typer.Argument(metavar="ID_OR_PREFIX", help="the key's id or prefix")
    ],
    database_url: KeysDatabase = None,
) -> None:
    """Revoke a key. API processes refuse it within CHATPGT_AUTH_CACHE_TTL_S seconds (5 s)."""
    key, revoked_now = _admin(database_url).revoke(id_or_prefix)
    if revoked_now:
        out.print(f"revoked key {key.id} {escape(repr(key.name))} (prefix {key.prefix})")
    else:
        out.print(
            f"key {key.id} {escape(repr(key.name))} was revoked already, at {when(key.revoked_at)}"
        )
