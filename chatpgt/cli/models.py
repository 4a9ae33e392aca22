"""``chatpgt models``: the model registry."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from chatpgt.cli.context import api
from chatpgt.cli.output import out, when

app = typer.Typer(help="The model registry.", no_args_is_help=True)


@app.command("list")
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print the models as JSON lines")] = False,
) -> None:
    """Every registered model: base models and those training produced, with lineage."""
    models = list(api(ctx).iter_models())
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
            when(m.created_at),
            escape(m.path),
        )
    out.print(table)


