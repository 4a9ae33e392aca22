"""Evaluation runs as the API and the tasks see them: submit, read, cancel, report, execute.

Submitting resolves every model (registry id or name, local directory, hub id), finds the
held-out essays of the lineage, checks the judge's provider and key and that the style
classifier has other writers to learn from; anything wrong is a 4xx and nothing is queued. The
caller commits, then enqueues ``chatpgt.eval.run`` with the run id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.errors import InvalidInput
from chatpgt.evaluation import heldout as heldout_mod
from chatpgt.evaluation import repository as repo
from chatpgt.evaluation.errors import (
    EvalNotCancellable,
    EvalRunNotFound,
    JudgeUnavailable,
    NoOtherEssays,
    ReportNotReady,
    UnknownEvalModel,
)
from chatpgt.evaluation.models import EvalRun
from chatpgt.evaluation.schemas import EvalOptions, EvalRequest, EvalRunOut, EvalRunPage
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.status import TRAINING_RUN, RunStatus
from chatpgt.orchestration.tasks import EVAL_RUN
from chatpgt.paths import DataRoots
from chatpgt.settings import Settings
from chatpgt.training.corpus import check_local_source
from chatpgt.training.errors import InvalidModelSource
from chatpgt.training.service import _resolve_model as resolve_training_model

TASK_NAME = EVAL_RUN


async def _resolve(session: AsyncSession, ref: int | str, roots: DataRoots) -> dict[str, Any]:
    """{"ref", "name", "kind", "path", "model_id"} of one requested model."""
    text = str(ref).strip()
    if isinstance(ref, int) or text.isdigit():
        found = await repo.models_by_id(session, [int(text)])
        model = found.get(int(text))
        if model is None:
            raise UnknownEvalModel(f"No registered model has id {text}.", model=ref)
        return {
            "ref": ref,
            "name": model.name,
            "kind": model.kind,
            "path": model.path,
            "model_id": model.id,
        }
    try:
        start = await resolve_training_model(session, text, allow_run_id=False, roots=roots)
    except InvalidModelSource as exc:
        raise UnknownEvalModel(exc.detail, model=ref) from exc
    return {**start, "name": text if start.get("model_id") is None else text}


def check_judge(settings: Settings, request: EvalOptions) -> None:
    """400 for a judge on an unknown provider or on one whose key is not set."""
    judge = request.judge
    if judge is None:
        return
    providers = settings.provider_configs()
    cfg = providers.get(judge.provider)
    if cfg is None:
        raise JudgeUnavailable(
            f"Unknown judge provider {judge.provider!r}; configured: "
            f"{', '.join(sorted(providers))}.",
            provider=judge.provider,
        )
    if cfg.kind != "local" and (cfg.api_key_env or cfg.api_key_file) and cfg.api_key() is None:
        where = cfg.api_key_env or cfg.api_key_file
        raise JudgeUnavailable(
            f"The judge provider {judge.provider!r} has no key: set {where}.",
            provider=judge.provider,
        )


async def submit(
    session: AsyncSession, settings: Settings, request: EvalRequest, *, roots: DataRoots
) -> EvalRun:
    models = [await _resolve(session, ref, roots) for ref in request.models]
    registered = [m["model_id"] for m in models if m.get("model_id") is not None]
    untracked = [str(m["ref"]) for m in models if m.get("model_id") is None]
    held = await check_options(
        session, settings, request, registered, untracked=untracked, roots=roots
    )
    if request.reference not in ("sft", "real") and request.reference not in {
        str(m["ref"]) for m in models
    }:
        raise InvalidInput(
            f"reference {request.reference!r} is neither 'sft', 'real' nor one of the models.",
            reference=request.reference,
        )
    return await repo.create_run(
        session,
        name=request.name,
        request=request.model_dump(mode="json"),
        models=models,
        heldout=held,
    )


async def check_options(
    session: AsyncSession,
    settings: Settings,
    options: EvalOptions,
    model_ids: list[int],
    *,
    untracked: list[str] | None = None,
    roots: DataRoots,
    candidates_to_come: bool = False,
) -> dict[str, Any]:
    """What submit checks of an evaluation of the registered models ``model_ids`` (and the
    ``untracked`` ones, by path or hub id) with ``options``: the judge's provider and key, the
    held-out essays of the lineage (returned: the run's ``heldout`` record), the style
    classifier's other writers. 4xx (:class:`~chatpgt.errors.ChatPGTError`) when one is wrong.
    ``candidates_to_come``: the caller makes candidate essays before the evaluation runs (a
    rounds run's datagen job), so an empty database is no reason to refuse."""
    check_judge(settings, options)
    held = await heldout_mod.heldout_set(
        session,
        model_ids,
        sft_run=options.sft_run,
        max_essays=options.max_essays,
        untracked=untracked or [],
    )
    if options.style.enabled:
        other = options.style.other_essays
        if other:
            roots.check_source(other, field="style.other_essays")
            await asyncio.to_thread(check_local_source, other)
        elif not candidates_to_come and await repo.count_candidate_essays(session) == 0:
            raise NoOtherEssays(
                "The style classifier needs other writers' essays: the database holds no "
                "candidate essays yet; run a datagen job, pass style.other_essays (a file), or "
                "set style.enabled false.",
            )
    return held


async def get_run(session: AsyncSession, run_id: int) -> EvalRunOut:
    run = await repo.get_run(session, run_id)
    if run is None:
        raise EvalRunNotFound(run_id)
    return run_out(run)


async def list_runs(
    session: AsyncSession, *, limit: int, before: int | None = None, status: str | None = None
) -> EvalRunPage:
    runs = await repo.list_runs(session, limit=limit, before=before, status=status)
    return EvalRunPage(
        items=[run_out(r) for r in runs],
        next_before=runs[-1].id if len(runs) == limit else None,
    )


RUNS = leased.LeasedKind(EvalRun, TRAINING_RUN, EvalRunNotFound, EvalNotCancellable)


async def cancel_run(session: AsyncSession, run_id: int) -> EvalRunOut:
    """A queued run is cancelled at once, a running one at its next essay; 409 once finished."""
    await RUNS.cancel(session, run_id, error=None)
    return await get_run(session, run_id)


async def report_path(session: AsyncSession, run_id: int, kind: str) -> Path:
    """The run's report file (``html`` or ``json``); 409 while it has none."""
    run = await repo.get_run(session, run_id)
    if run is None:
        raise EvalRunNotFound(run_id)
    path = (run.artifacts or {}).get(f"report_{kind}")
    exists = bool(path) and await asyncio.to_thread(Path(str(path)).is_file)
    if run.status != RunStatus.SUCCEEDED or not exists:
        raise ReportNotReady(run_id, run.status)
    return Path(str(path))


def run_out(run: EvalRun) -> EvalRunOut:
    held = {k: v for k, v in (run.heldout or {}).items() if k != "train"}
    return EvalRunOut(
        id=run.id,
        status=run.status,  # type: ignore[arg-type]
        name=run.name,
        request=run.request,
        models=run.models,
        heldout=held,
        progress=run.progress or {},
        results=run.results or {},
        artifacts=run.artifacts or {},
        **run.leased_out(),
    )


def execute_run(run_id: int, settings: Settings | None = None) -> str:
    """Run an evaluation in this (worker) process; see :mod:`.runner`."""
    from chatpgt.evaluation.runner import execute_eval

    return execute_eval(run_id, settings)


def recoverable_runs(settings: Settings | None = None) -> list[tuple[int, float]]:
    from chatpgt.evaluation.runner import recoverable_eval_runs

    return recoverable_eval_runs(settings)
