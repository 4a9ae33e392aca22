"""``chatpgt models``: the model registry."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from chatpgt.cli.context import api
from chatpgt.cli.output import err, fail, filesize, out, usage, when
from chatpgt.errors import InvalidInput
from chatpgt.serving import hub
from chatpgt.serving.archive import read_tar
from chatpgt.serving.schemas import GenerationCreate, GenerationOut

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


@app.command("card")
def models_card(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model id or name")],
) -> None:
    """Print the model's Hugging Face card (README.md), with its latest evaluation."""
    client = api(ctx)
    typer.echo(client.model_card(client.model_by_ref(model).id), nl=False)


@app.command("generate")
def models_generate(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model id or name")],
    title: Annotated[str, typer.Argument(help="the essay's title")],
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate at most")] = 400,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding")] = 0.7,
    top_p: Annotated[float, typer.Option(help="nucleus sampling")] = 0.9,
    n: Annotated[int, typer.Option("-n", "--n", help="essays to sample")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print the request as JSON")] = False,
) -> None:
    """Ask a trained model for an essay on TITLE and print it.

    A gpu worker generates it (the model stays loaded there between requests); the system
    prompt is the one the model was trained with."""
    client = api(ctx)
    found = client.model_by_ref(model)
    try:
        body = GenerationCreate(
            title=title, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
        usage(f"{option}: {first['msg']}")
    started = time.monotonic()
    generation = client.submit_generation(found.id, body)
    err.print(escape(f"generation {generation.id} for {found.name}: {generation.status}"))
    # One essay is printed as the model writes it (the request's event stream); several are
    # printed whole at the end.
    live = n == 1 and not as_json
    written = ""
    for event, data in client.generation_events(found.id, generation.id):
        if event == "done":
            generation = GenerationOut.model_validate(data)
        elif live and event == "delta":
            typer.echo(data["text"], nl=False)
            written += data["text"]
        elif live and event == "replace":  # rare: the text did not just grow
            typer.echo("\n" + data["text"], nl=False)
            written = data["text"]
    if live and written:
        typer.echo()
    if as_json:
        typer.echo(generation.model_dump_json())
    if generation.status != "succeeded":
        fail(f"generation {generation.id} {generation.status}: {generation.error or ''}")
    if not as_json and not live:
        for i, essay in enumerate(generation.results):
            if len(generation.results) > 1:
                out.print(f"--- essay {i + 1} of {len(generation.results)} ---")
            typer.echo(essay.text)
    t = generation.timings
    err.print(
        f"{sum(e.completion_tokens for e in generation.results)} tokens in "
        f"{time.monotonic() - started:.1f} s (load {t.get('load_s', 0):.1f} s, "
        f"{t.get('tokens_per_s') or 0:.1f} tokens/s on {t.get('device', '?')})",
        soft_wrap=True,
    )


@app.command("push")
def models_push(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model id or name")],
    repo: Annotated[str, typer.Argument(help="Hub model repository, owner/name")],
    private: Annotated[
        bool, typer.Option("--private/--public", help="create the Hub repo private (default)")
    ] = True,
    hf_token: Annotated[
        str | None,
        typer.Option(help="Hugging Face token (default: HF_TOKEN or the saved login)"),
    ] = None,
    adapter: Annotated[
        bool,
        typer.Option(
            "--adapter", help="push the run's LoRA adapter (for peft) instead of the merged model"
        ),
    ] = False,
) -> None:
    """Upload the model's folder (weights, tokenizer, chat template) with its card as README.md
    to a Hub model repository. The token is checked before anything is downloaded or uploaded;
    the folder comes from the API (GET /models/{id}/archive). A model trained with LoRA is
    merged into full weights; --adapter pushes the adapter alone, with its own card."""
    try:
        token = hub.hub_token(hf_token)
        account = hub.check_token(token)
    except InvalidInput as exc:
        fail(exc.detail)
    client = api(ctx)
    found = client.model_by_ref(model)
    with tempfile.TemporaryDirectory(prefix="chatpgt-push-") as tmp:
        tar_path = Path(tmp) / "model.tar"
        with tar_path.open("wb") as f:
            size = client.model_archive(found.id, f, adapter=adapter)
        err.print(f"fetched {found.name} ({filesize(size)}); uploading as {escape(account)}")
        folder = read_tar(tar_path.read_bytes(), Path(tmp) / "folder")
        url, files = hub.push_folder(folder, repo, token=token, private=private)
    what = f"the LoRA adapter of {found.name}" if adapter else found.name
    out.print(f"pushed {len(files)} files of {escape(what)} to {escape(url)}")
