"""``chatpgt topics``: add topics by title, import them from a file or a dataset."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.markup import escape

from chatpgt.api_client.requests import build_import_request, validation_message
from chatpgt.cli.context import api
from chatpgt.cli.options import AsJson
from chatpgt.cli.output import out, plural, usage
from chatpgt.topics.schemas import TopicsCreate

SHOWN_TOPICS = 20

app = typer.Typer(help="Add and import topics.", no_args_is_help=True)


@app.command("add")
def topics_add(
    ctx: typer.Context,
    titles: Annotated[list[str], typer.Argument(help="topic titles", show_default=False)],
    as_json: AsJson = False,
) -> None:
    """Add topics by title; titles already present (after normalisation) are kept once."""
    try:
        TopicsCreate(titles=titles)
    except ValidationError as exc:
        usage(validation_message(exc))
    result = api(ctx).add_topics(titles)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    out.print(f"{plural(result.created, 'topic')} added, {result.existing} already present")
    for topic in result.topics[:SHOWN_TOPICS]:
        out.print(f"  #{topic.id}  {escape(topic.title)}")
    if len(result.topics) > SHOWN_TOPICS:
        out.print(f"  … and {len(result.topics) - SHOWN_TOPICS} more")


@app.command("import")
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
    result = api(ctx).import_topics(request)
    out.print(
        f"{plural(result.rows, 'row')} read: {plural(result.created, 'topic')} created, "
        f"{result.existing} already present, {result.duplicates} duplicate, {result.skipped} blank"
        + (
            f", {plural(result.reference_texts_added, 'essay')} added to existing topics"
            if result.reference_texts_added
            else ""
        )
    )
