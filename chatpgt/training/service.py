"""Training, as the API and the tasks see it: submit, read, cancel, list models, execute.

Submitting checks what can be checked cheaply without torch (local paths exist, the corpus file
has title and text, the pair selection is not empty, the output name is free, a hub model id is
reachable: the hub is online or the model is in the local cache) and writes a queued run; the
caller commits and then enqueues ``chatpgt.train.<kind>`` with the run id. Everything that needs
the model itself is checked by the worker, and a failure there becomes a failed run with its
reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.errors import Conflict
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.status import TRAINING_RUN, RunStatus
from chatpgt.paths import DataRoots, looks_like_hub_id
from chatpgt.settings import Settings, get_settings
from chatpgt.training import distributed
from chatpgt.training import repository as repo
from chatpgt.training.corpus import check_local_source
from chatpgt.training.errors import (
    InvalidModelSource,
    ModelNotFound,
    NoPairsSelected,
    RunNotCancellable,
    TrainingRunNotFound,
)
from chatpgt.training.export import filters_from_request
from chatpgt.training.hub import offline_unavailable_reason
from chatpgt.training.models import RegisteredModel, TrainingRun
from chatpgt.training.schemas import (
    DPORequest,
    EssaySplit,
    LineageEntry,
    ModelOut,
    ModelPage,
    Progress,
    SFTRequest,
    TrainingKnobs,
    TrainingRunOut,
    TrainingRunPage,
)


async def submit_sft(
    session: AsyncSession, request: SFTRequest, *, roots: DataRoots
) -> TrainingRun:
    """A queued SFT run. Raises 400s for a missing local base model or an unreadable corpus, 403
    for a local path outside ``roots`` and 409 when ``name`` is already in the registry."""
    roots.check_source(request.corpus, field="corpus")
    _resolve_processes(request.hyperparameters)
    start = await _resolve_model(session, request.base_model, allow_run_id=False, roots=roots)
    await asyncio.to_thread(check_local_source, request.corpus)
    await _check_name_free(session, request.name)
    return await repo.create_run(
        session,
        kind="sft",
        request=request.model_dump(mode="json"),
        start_model=start,
        output_name=request.name,
    )


async def submit_dpo(
    session: AsyncSession, request: DPORequest, *, roots: DataRoots
) -> TrainingRun:
    """A queued DPO run. Raises 400 when the starting model cannot be found or no pair matches
    the selection, 403 for a local model path outside ``roots``, 409 when ``name`` is taken."""
    _resolve_processes(request.hyperparameters)
    start = await _resolve_model(
        session, str(request.model), allow_run_id=True, roots=roots, check_hub=False
    )
    filters = filters_from_request(request.pairs.model_dump())
    matching = await repo.count_pairs(session, filters)
    if matching == 0:
        raise NoPairsSelected(
            "No preference pair matches the selection "
            f"(min_confidence >= {filters.min_confidence}"
            + (f", job_ids {list(filters.job_ids)}" if filters.job_ids else "")
            + (f", source {filters.source}" if filters.source else "")
            + "); generate pairs first or loosen the selection.",
            pairs=request.pairs.model_dump(mode="json"),
        )
    extra: dict[str, Any] = {"pairs_at_submit": matching}
    if request.pairs.exclude_heldout and start.get("model_id") is not None:
        # Keep the lineage's held-out essays out of DPO too (chatpgt.evaluation.heldout).
        found = await repo.lineage_heldout_topics(session, int(start["model_id"]))
        if found is not None:
            sft_run_id, topics = found
            on_heldout = await repo.count_pairs_on_topics(session, filters, topics)
            if on_heldout >= matching:
                raise NoPairsSelected(
                    f"All {matching} matching pairs are on essays SFT run {sft_run_id} held out "
                    "for evaluation; set pairs.exclude_heldout false to train on them anyway.",
                    pairs=request.pairs.model_dump(mode="json"),
                )
            extra.update(heldout_topics=topics, pairs_at_submit=matching - on_heldout)
    await _check_name_free(session, request.name)
    # After the pair checks: "no pair matches" is the more useful answer when both apply.
    await _check_hub_reachable(start)
    return await repo.create_run(
        session,
        kind="dpo",
        request={**request.model_dump(mode="json"), **extra},
        start_model=start,
        output_name=request.name,
    )


def _resolve_processes(hp: TrainingKnobs) -> None:
    """Refuse (400) a process count or FSDP the workers cannot run; store the count the run
    uses in its request, so the row says how it was trained."""
    hp.num_processes = distributed.check_request(hp, get_settings())


async def _resolve_model(
    session: AsyncSession,
    ref: str,
    *,
    allow_run_id: bool,
    roots: DataRoots,
    check_hub: bool = True,
) -> dict[str, Any]:
    """Where training starts: {"ref", "path", "model_id", "kind"}.

    In order: a finished SFT run id (DPO only), a registered model name, a local model
    directory, a Hugging Face id (refused when the hub is offline and the model is not in the
    local cache, unless ``check_hub`` is false: then the caller checks it with
    :func:`_check_hub_reachable`).
    """
    ref = ref.strip()
    if allow_run_id and ref.isdigit():
        return await _from_sft_run(session, int(ref))
    registered = await repo.get_model_by_name(session, ref)
    if registered is not None:
        return _start(ref, registered)
    if looks_like_hub_id(ref):
        start = {"ref": ref, "path": ref, "model_id": None, "kind": "hub"}
        if check_hub:
            await _check_hub_reachable(start)
        return start
    roots.check(ref, field="model")
    return await asyncio.to_thread(_local_model_dir, ref)


async def _check_hub_reachable(start: dict[str, Any]) -> None:
    """400 for a hub model the workers cannot load: offline and not in the local cache."""
    if start.get("kind") != "hub":
        return
    reason = await asyncio.to_thread(offline_unavailable_reason, str(start["ref"]))
    if reason is not None:
        raise InvalidModelSource(reason, model=start["ref"])


def _local_model_dir(ref: str) -> dict[str, Any]:
    path = Path(ref).expanduser()
    if not path.exists():
        raise InvalidModelSource(
            f"The model path {ref!r} does not exist (and is not a registered model name).",
            model=ref,
        )
    if not (path / "config.json").is_file():
        raise InvalidModelSource(
            f"The model path {ref!r} is not a model directory (no config.json).", model=ref
        )
    return {"ref": ref, "path": str(path.resolve()), "model_id": None, "kind": "path"}


async def _from_sft_run(session: AsyncSession, run_id: int) -> dict[str, Any]:
    run = await repo.get_run(session, run_id)
    if run is None:
        raise InvalidModelSource(f"Training run {run_id} does not exist.", model=run_id)
    if run.kind != "sft" or run.status != RunStatus.SUCCEEDED:
        raise InvalidModelSource(
            f"Training run {run_id} is a {run.status} {run.kind} run; DPO starts from a "
            "succeeded SFT run.",
            model=run_id,
        )
    registered = await repo.get_model_by_run(session, run_id)
    if registered is None:
        raise InvalidModelSource(f"Training run {run_id} registered no model.", model=run_id)
    return _start(str(run_id), registered)


def _start(ref: str, model: RegisteredModel) -> dict[str, Any]:
    return {"ref": ref, "path": model.path, "model_id": model.id, "kind": model.kind}


async def _check_name_free(session: AsyncSession, name: str | None) -> None:
    if name and await repo.get_model_by_name(session, name) is not None:
        raise Conflict(f"A model named {name!r} is already registered.", name=name)


# --------------------------------------------------------------------------------------------
# Reading and cancelling


async def get_run(session: AsyncSession, run_id: int) -> TrainingRunOut:
    run = await repo.get_run(session, run_id)
    if run is None:
        raise TrainingRunNotFound(run_id)
    model_ids = await repo.model_ids_by_run(session, [run.id])
    return run_out(run, model_ids.get(run.id))


async def list_runs(
    session: AsyncSession,
    *,
    limit: int,
    before: int | None = None,
    kind: str | None = None,
    status: str | None = None,
) -> TrainingRunPage:
    """Newest first; pass ``next_before`` back as ``before`` for the next page."""
    runs = await repo.list_runs(session, limit=limit, before=before, kind=kind, status=status)
    model_ids = await repo.model_ids_by_run(session, [r.id for r in runs])
    return TrainingRunPage(
        items=[run_out(r, model_ids.get(r.id)) for r in runs],
        next_before=runs[-1].id if len(runs) == limit else None,
    )


RUNS = leased.LeasedKind(TrainingRun, TRAINING_RUN, TrainingRunNotFound, RunNotCancellable)


async def cancel_run(session: AsyncSession, run_id: int) -> TrainingRunOut:
    """Cancel a run: a queued one at once; a running one stops at its next step, keeping its
    last checkpoint. Cancelling a cancelled run is a no-op; a finished one is a 409."""
    await RUNS.cancel(session, run_id, error=None)
    return await get_run(session, run_id)


def run_out(run: TrainingRun, model_id: int | None) -> TrainingRunOut:
    report = run.data_report or {}
    examples = report.get("examples") or {}
    return TrainingRunOut(
        id=run.id,
        kind=run.kind,  # type: ignore[arg-type]
        status=run.status,  # type: ignore[arg-type]
        name=run.output_name,
        request=run.request,
        start_model=run.start_model,
        progress=Progress.model_validate(run.progress or {}),
        metrics={"latest": {}, "final": {}, **(run.metrics or {})},
        examples={"train": int(examples.get("train", 0)), "eval": int(examples.get("eval", 0))},
        data_report=report,
        artifacts=run.artifacts or {},
        essay_split=essay_split_summary(run.essay_split),
        samples=run.samples or [],
        model_id=model_id,
        **run.leased_out(),
    )


def essay_split_summary(split: dict[str, Any] | None) -> EssaySplit | None:
    """The stored split without its per-essay lists: counts and the held-out titles."""
    if not split:
        return None
    held = split.get("eval") or []
    rest = {k: v for k, v in split.items() if k not in ("train", "eval")}
    return EssaySplit(
        **rest,
        train_essays=len(split.get("train") or []),
        eval_essays=len(held),
        heldout_titles=[str(e.get("title")) for e in held],
    )


# --------------------------------------------------------------------------------------------
# Registry


async def list_models(session: AsyncSession, *, limit: int, after: int | None = None) -> ModelPage:
    """Registered models, oldest first, each with its lineage (base first)."""
    models = await repo.list_models(session, limit=limit, after=after)
    lineage = await repo.lineages(session, [m.id for m in models])
    return ModelPage(
        items=[model_out(m, lineage.get(m.id, [])) for m in models],
        next_after=models[-1].id if len(models) == limit else None,
    )


async def get_model(session: AsyncSession, model_id: int) -> ModelOut:
    model = await repo.get_model(session, model_id)
    if model is None:
        raise ModelNotFound(str(model_id))
    lineage = await repo.lineages(session, [model.id])
    return model_out(model, lineage.get(model.id, []))


def model_out(model: RegisteredModel, lineage: list[tuple[int, str, str]]) -> ModelOut:
    return ModelOut(
        id=model.id,
        name=model.name,
        kind=model.kind,
        path=model.path,
        parent_id=model.parent_id,
        run_id=model.run_id,
        metrics=model.metrics or {},
        lineage=[LineageEntry(id=i, name=n, kind=k) for i, n, k in lineage],
        created_at=model.created_at,
    )


# --------------------------------------------------------------------------------------------
# Worker entry points


def execute_run(run_id: int, settings: Settings | None = None) -> str:
    """Run or resume a training run in this (worker) process; see :mod:`.worker`."""
    from chatpgt.training.execution import execute_run as _execute

    return _execute(run_id, settings)


def recoverable_runs(settings: Settings | None = None) -> list[tuple[int, str, float]]:
    """Runs a starting GPU worker re-enqueues: ``(run id, kind, seconds to wait)`` (see
    RunStore.orphaned_runs)."""
    from chatpgt.training.execution import recoverable_runs as _recoverable

    return _recoverable(settings)
