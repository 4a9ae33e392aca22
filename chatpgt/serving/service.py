"""Serving a trained model: its card, generations, the Hub push and the archive.

The card is rendered from the rows on every read (``GET /models/{id}/card``, a push, an
archive), so it always carries the model's latest evaluation; the gpu worker also writes it into
the model's folder as ``README.md`` when the training run finishes and again when an evaluation
of the model succeeds (:func:`refresh_cards`), so a folder copied by hand has it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.db.session import make_engine, make_sessionmaker
from chatpgt.serving import card
from chatpgt.serving import repository as repo
from chatpgt.serving.archive import archive_name, stream_tar
from chatpgt.serving.errors import (
    GenerationRequestNotFound,
    InvalidGeneration,
    ModelFolderMissing,
    RegisteredModelNotFound,
)
from chatpgt.serving.models import ModelGeneration
from chatpgt.serving.schemas import GeneratedEssay, GenerationCreate, GenerationOut
from chatpgt.settings import Settings
from chatpgt.training.chat_format import TEMPLATE_FILE, TOKENIZER_CONFIG, default_system_prompt
from chatpgt.training.models import RegisteredModel, TrainingRun
from chatpgt.training.outcome import ADAPTER_DIR

log = logging.getLogger(__name__)
CARD_FILE = "README.md"


async def resolve_model(session: AsyncSession, ref: int | str) -> RegisteredModel:
    """A registered model by id (a number, or a string of digits) or by name; 404 otherwise."""
    model = None
    if isinstance(ref, int) or str(ref).isdigit():
        model = await repo.get_model(session, int(ref))
    if model is None and isinstance(ref, str):
        model = await repo.get_model_by_name(session, ref)
    if model is None:
        raise RegisteredModelNotFound(ref)
    return model


def model_folder(model: RegisteredModel) -> Path:
    """The model's folder on this machine; 409 when it has none (a hub base, a deleted run)."""
    path = Path(model.path)
    if not (path / "config.json").is_file():
        raise ModelFolderMissing(
            f"Model {model.name!r} has no model folder here ({model.path!r}): only models "
            "trained by ChatPGT (or registered from a local folder) can be served from it.",
            model=model.name,
        )
    return path


def _run_dict(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "request": run.request or {},
        "data_report": run.data_report or {},
        "metrics": run.metrics or {},
        "essay_split": run.essay_split,
        "artifacts": run.artifacts or {},
        "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
    }


def _system_prompt(path: Path) -> str | None:
    """The default system prompt the folder's saved chat template renders (chat_format)."""
    template = path / TEMPLATE_FILE
    try:
        if template.is_file():
            return default_system_prompt(template.read_text(encoding="utf-8"))
        config = path / TOKENIZER_CONFIG
        if config.is_file():
            value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
            return default_system_prompt(value) if isinstance(value, str) else None
    except (OSError, ValueError):
        return None
    return None


async def card_inputs(session: AsyncSession, model: RegisteredModel) -> card.CardInputs:
    chain = await repo.ancestry(session, model)
    runs = await repo.runs_by_id(session, [m.run_id for m in chain if m.run_id is not None])
    items = [card.LineageItem(m.id, m.name, m.kind, m.path, m.run_id) for m in chain]
    sft_corpus = next(
        (
            str(runs[m.run_id].request.get("corpus"))
            for m in reversed(chain)
            if m.run_id in runs and runs[m.run_id].kind == "sft"
        ),
        None,
    )
    run = runs.get(model.run_id) if model.run_id is not None else None
    found = await repo.latest_evaluation(session, model.id)
    evaluation = None
    if found is not None:
        eval_run, entry = found
        evaluation = {
            "run_id": eval_run.id,
            "entry": entry,
            "reference": (eval_run.results or {}).get("reference"),
            "heldout": eval_run.heldout or {},
        }
    system_prompt = await asyncio.to_thread(_system_prompt, Path(model.path))
    return card.CardInputs(
        model=items[-1],
        lineage=items,
        run=_run_dict(run) if run is not None else None,
        sft_corpus=sft_corpus,
        metrics=model.metrics or {},
        system_prompt=system_prompt,
        evaluation=evaluation,
    )


async def model_card(session: AsyncSession, ref: int | str) -> str:
    """The model's card (README.md text) as of now."""
    model = await resolve_model(session, ref)
    return card.render(await card_inputs(session, model))


def write_card(model: RegisteredModel, text: str, run_dir: str | None) -> list[Path]:
    """Write ``text`` as the model folder's README.md, and over the run directory's README.md
    (where TRL's trainer left a card that names no base model); the paths written."""
    written = []
    folder = Path(model.path)
    targets = [folder / CARD_FILE] if (folder / "config.json").is_file() else []
    if run_dir and (Path(run_dir) / CARD_FILE).is_file():
        targets.append(Path(run_dir) / CARD_FILE)
    for target in targets:
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written


async def write_cards(session: AsyncSession, model_ids: list[int]) -> list[Path]:
    written: list[Path] = []
    for model_id in model_ids:
        model = await repo.get_model(session, model_id)
        if model is None:
            continue
        inputs = await card_inputs(session, model)
        run_dir = ((inputs.run or {}).get("artifacts") or {}).get("run_dir")
        written += await asyncio.to_thread(write_card, model, card.render(inputs), run_dir)
    return written


def refresh_cards(
    database_url: str, *, training_run: int | None = None, eval_run: int | None = None
) -> list[Path]:
    """For a worker, after a training run or an evaluation run succeeded: (re)write the cards of
    the models it produced or measured. Sync, with its own event loop and engine. Never raises:
    a card that cannot be written is logged (the model itself is fine)."""

    async def _refresh() -> list[Path]:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                ids: list[int] = []
                if training_run is not None:
                    ids += await repo.models_of_run(session, training_run)
                if eval_run is not None:
                    ids += await repo.models_of_eval_run(session, eval_run)
                return await write_cards(session, ids)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(_refresh())
    except Exception:
        log.exception(
            "could not write the model cards (training run %s, evaluation run %s)",
            training_run,
            eval_run,
        )
        return []


# --------------------------------------------------------------------------------------------
# Generations


def _context_length(folder: Path) -> int | None:
    """The model's context (``max_position_embeddings`` of its config.json), if it says."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


async def submit_generation(
    session: AsyncSession, ref: int | str, body: GenerationCreate
) -> ModelGeneration:
    """A queued generation request of a registered model with a folder here: 404 for an unknown
    model, 409 for one without a folder (a hub base), 400 for ``max_new_tokens`` the model's
    context cannot hold. The caller commits, then enqueues ``GENERATE`` with the id."""
    model = await resolve_model(session, ref)
    folder = await asyncio.to_thread(model_folder, model)
    context = await asyncio.to_thread(_context_length, folder)
    if context is not None and body.max_new_tokens >= context:
        raise InvalidGeneration(
            f"max_new_tokens {body.max_new_tokens} does not fit the context of {model.name!r} "
            f"({context} tokens, prompt included).",
            max_new_tokens=body.max_new_tokens,
            context=context,
        )
    request = {
        "messages": body.chat_messages(),
        "title": body.title,
        "max_new_tokens": body.max_new_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "n": body.n,
    }
    return await repo.create_generation(session, model_id=model.id, request=request)


async def get_generation(session: AsyncSession, model_id: int, generation_id: int) -> GenerationOut:
    row = await repo.get_generation(session, generation_id)
    if row is None or row.model_id != model_id:
        raise GenerationRequestNotFound(generation_id)
    model = await repo.get_model(session, row.model_id)
    return GenerationOut(
        id=row.id,
        model_id=row.model_id,
        model_name=model.name if model else "",
        status=row.status,  # type: ignore[arg-type]
        request=row.request,
        results=[GeneratedEssay.model_validate(r) for r in row.results or []],
        timings=row.timings or {},
        attempts=row.attempts,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


EVENTS_POLL_S = 0.5
EVENTS_KEEPALIVE_S = 15.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def generation_events(
    sessionmaker: Callable[[], AsyncSession],
    model_id: int,
    generation_id: int,
    poll_s: float = EVENTS_POLL_S,
) -> AsyncIterator[str]:
    """The request's essays as server-sent events while the model writes them: ``delta``
    (``{"index", "text"}``: text to append to essay ``index``), ``replace`` (``{"index",
    "text"}``: the essay so far, when it did not just grow), then one ``done`` with the whole
    request (``GenerationOut``; its ``status`` says whether it succeeded), and the stream ends.
    Comments keep an idle stream open while the request waits for a worker."""
    sent: list[str] = []
    idle = 0.0
    while True:
        async with sessionmaker() as session:
            out = await get_generation(session, model_id, generation_id)
        for i, essay in enumerate(out.results):
            # A partial essay may end in half a character (decoded token by token).
            text = essay.text if essay.finish_reason else essay.text.rstrip("\ufffd")
            before = sent[i] if i < len(sent) else ""
            if i >= len(sent):
                sent.append("")
            if text == before:
                continue
            if text.startswith(before):
                yield _sse("delta", {"index": i, "text": text[len(before) :]})
            else:
                yield _sse("replace", {"index": i, "text": text})
            sent[i] = text
            idle = 0.0
        if out.status in TERMINAL:
            yield _sse("done", out.model_dump(mode="json"))
            return
        await asyncio.sleep(poll_s)
        idle += poll_s
        if idle >= EVENTS_KEEPALIVE_S:
            idle = 0.0
            yield f": {out.status}\n\n"


def execute_generation(generation_id: int, settings: Settings | None = None) -> str:
    """Worker entry point (:mod:`chatpgt.serving.runner`)."""
    from chatpgt.serving.runner import execute_generation as _execute

    return _execute(generation_id, settings)


def recoverable_generations(settings: Settings | None = None) -> list[tuple[int, float]]:
    from chatpgt.serving.runner import recoverable_generations as _recoverable

    return _recoverable(settings)


# --------------------------------------------------------------------------------------------
# Archive


def adapter_folder(model: RegisteredModel) -> Path:
    """The LoRA adapter of a model trained with LoRA: the folder a merged run kept beside its
    model (``<run dir>/adapter``), or the model folder itself when the run saved the adapter
    unmerged (``lora.merge: false``); 409 for a model trained without LoRA."""
    folder = model_folder(model)
    for candidate in (folder.parent / ADAPTER_DIR, folder):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise ModelFolderMissing(
        f"Model {model.name!r} has no LoRA adapter: it was trained without LoRA (its folder "
        "holds full weights only), or before adapters were kept.",
        model=model.name,
    )


async def model_archive(
    session: AsyncSession, model_id: int, *, adapter: bool = False
) -> tuple[str, Iterator[bytes]]:
    """``(file name, tar chunks)`` of the model's folder (or, with ``adapter``, of its LoRA
    adapter) with its card as of now as README.md; 404 for an unknown model, 409 for one
    without a folder (or an adapter) here."""
    model = await resolve_model(session, model_id)
    folder = await asyncio.to_thread(adapter_folder if adapter else model_folder, model)
    text = card.render(await card_inputs(session, model), adapter=adapter)
    top = archive_name(model.name) + ("-adapter" if adapter else "")
    return f"{top}.tar", stream_tar(folder, top, {CARD_FILE: text.encode()})
