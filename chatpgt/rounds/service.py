"""On-policy rounds, as the API and the step task see them.

A rounds run starts from a registered SFT model and runs K rounds; round n:

1. a datagen job whose generators are the current model (``policy``: the ``local`` provider
   given the model's registry name, or a configured OpenAI-compatible provider serving it under
   that name) plus the request's extra generators, judged by ``judge``;
2. once it succeeded, a DPO run from the current model on the job's pairs (and the earlier
   rounds' with ``accumulate``), registered as ``<name>-r<n>``;
3. once that succeeded, with the request's ``evaluation``: an eval run (``POST /eval/runs``) of
   the round's model next to the model it started from (and the best model so far, when that
   is another one), and the round's score read from its results (:mod:`.stopping`);
4. then its model is the current model of round n+1.

The run stops when K rounds are done (``completed``), when the datagen cost of all rounds
reaches ``budget_usd`` (``budget_exhausted``; each job also gets the budget left), once
``evaluation.patience`` rounds in a row did not improve on the best model so far
(``no_improvement``), on cancel (the current job, DPO run or eval run is cancelled), or when a
job or run fails.

Nothing here waits: :func:`step` advances the state machine by one move and says when to look
again. The ``chatpgt.datagen.rounds_step`` task (datagen queue: the gpu worker is never
blocked by it) calls it and sends itself again with the delay. A step takes the run's lease
for its own duration, so two deliveries never advance one run at once, and each step passes a
new ``step_token`` to its successor: a duplicated message (redelivery) carries a stale token
and stops its chain, unless the run has not been stepped for a while (the chain was lost: the
sweep and a starting worker send a message without a token then).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import service as datagen
from chatpgt.datagen.schemas import DatagenJobCreate, GeneratorSpec, TopicSelection
from chatpgt.db.session import (
    is_unavailable,
    make_engine,
    make_sessionmaker,
    run_once,
    transaction,
)
from chatpgt.errors import ChatPGTError, Conflict, InvalidInput, InvalidState, NotFound
from chatpgt.evaluation import service as evaluation
from chatpgt.evaluation.schemas import EvalRequest
from chatpgt.evaluation.scores import model_score
from chatpgt.orchestration.leases import now, worker_identity
from chatpgt.orchestration.status import ACTIVE, ROUNDS_RUN, TERMINAL, RunStatus
from chatpgt.orchestration.tasks import DATAGEN_RUN_JOB, EVAL_RUN, TRAIN_DPO
from chatpgt.paths import DataRoots
from chatpgt.rounds import repository as repo
from chatpgt.rounds import stopping
from chatpgt.rounds.models import Round, RoundsRun
from chatpgt.rounds.schemas import RoundOut, RoundsRequest, RoundsRunOut, RoundsRunPage
from chatpgt.settings import Settings
from chatpgt.training import distributed
from chatpgt.training import repository as training_repo
from chatpgt.training import service as training
from chatpgt.training.errors import InvalidModelSource
from chatpgt.training.schemas import DPORequest, PairSelection

log = logging.getLogger(__name__)

# (task name, argument): what a step sends once its transaction committed.
Send = Callable[[str, int], object]


class RoundsRunNotFound(NotFound):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"Rounds run {run_id} does not exist.", rounds_run_id=run_id)


# --------------------------------------------------------------------------------------------
# Submit


async def submit(
    session: AsyncSession,
    settings: Settings,
    request: RoundsRequest,
    *,
    roots: DataRoots | None = None,
) -> RoundsRun:
    """A queued rounds run; the caller commits and enqueues the first step. 400 for an unknown
    or non-SFT/DPO model, an unknown or keyless provider, an empty topic selection, a job the
    datagen API would refuse, a process count the workers cannot run, an evaluation the eval
    API would refuse for the start model (judge, held-out essays, other writers' file; 403 for
    a file outside ``roots``); 409 when a round's model name is already registered. Nothing is
    written then."""
    start = await _start_model(session, request.model)
    distributed.check_request(request.dpo.hyperparameters, settings)
    topic_ids = await datagen.resolve_topic_ids(session, request.topics)
    job = job_request(request, topic_ids, start["name"], request.budget_usd)
    datagen.check_providers(settings, job)
    if request.evaluation is not None:
        # The round's datagen job writes candidate essays before its evaluation: an empty
        # database is no reason to refuse the style classifier.
        await evaluation.check_options(
            session,
            settings,
            request.evaluation,
            [int(start["id"])],
            roots=roots or DataRoots.unrestricted(),
            candidates_to_come=True,
        )
    body = request.model_dump(mode="json")
    run = await repo.create_run(
        session, name=request.name, request={**body, "topic_ids": topic_ids}, start_model=start
    )
    for n in range(1, request.rounds + 1):
        name = round_model_name(run, n)
        if await training_repo.get_model_by_name(session, name) is not None:
            raise Conflict(f"A model named {name!r} (round {n}) is already registered.", name=name)
    return run


async def _start_model(session: AsyncSession, ref: int | str) -> dict[str, Any]:
    text = str(ref).strip()
    model = (
        await training_repo.get_model(session, int(text))
        if text.isdigit()
        else await training_repo.get_model_by_name(session, text)
    )
    if model is None:
        raise InvalidModelSource(f"No registered model matches {ref!r}.", model=ref)
    if model.kind not in ("sft", "dpo"):
        raise InvalidModelSource(
            f"Model {model.name!r} is a {model.kind} model; rounds start from a trained (SFT) "
            "model of the registry.",
            model=ref,
        )
    return {"id": model.id, "name": model.name, "kind": model.kind}


def job_request(
    request: RoundsRequest, topic_ids: list[int], model_name: str, budget_usd: float | None
) -> DatagenJobCreate:
    """The datagen job of a round whose current model is ``model_name``. InvalidInput when the
    datagen API would refuse it (e.g. fewer than two candidates per topic)."""
    policy = request.policy
    generators = [
        GeneratorSpec(
            provider=policy.provider,
            model=model_name,
            samples_per_topic=policy.samples_per_topic,
            temperature=policy.temperature,
            top_p=policy.top_p,
            max_tokens=policy.max_tokens,
        ),
        *request.generators,
    ]
    try:
        return DatagenJobCreate(
            topics=TopicSelection(ids=topic_ids),
            generators=generators,
            judge=request.judge,
            pairing=request.pairing,
            system_prompt=request.system_prompt,
            prompt_templates=request.prompt_templates,
            max_failure_rate=request.max_failure_rate,
            budget_usd=budget_usd,
        )
    except ValidationError as exc:
        reasons = "; ".join(e["msg"] for e in exc.errors())
        raise InvalidInput(f"the rounds' datagen job would be refused: {reasons}") from None


def round_model_name(run: RoundsRun, number: int) -> str:
    return f"{run.name}-r{number}"


def eval_request(run: RoundsRun, request: RoundsRequest, row: Round, best_id: int) -> EvalRequest:
    """The eval run of round ``row``: its model next to the model it started from and the best
    model so far (``best_id``, when that is another one), on ``evaluation``'s options. The
    judge's win rates are against the real held-out essay, the one reference every round
    shares."""
    assert request.evaluation is not None and row.model_id is not None
    models = [int(row.generator_model["id"]), row.model_id]
    if best_id not in models:
        models.insert(0, best_id)
    return EvalRequest(
        models=models,  # type: ignore[arg-type]
        name=f"{round_model_name(run, row.number)}-eval",
        reference="real",
        **request.evaluation.options(),
    )


def _standing(rounds: list[Round]) -> stopping.Standing:
    return stopping.standing((r.number, r.improved) for r in rounds)


def _best_model_id(run: RoundsRun, rounds: list[Round], best_round: int) -> int | None:
    if best_round == 0:
        return int(run.start_model["id"])
    return next((r.model_id for r in rounds if r.number == best_round), None)


def _request(run: RoundsRun) -> tuple[RoundsRequest, list[int]]:
    body = dict(run.request)
    topic_ids = [int(i) for i in body.pop("topic_ids")]
    return RoundsRequest.model_validate(body), topic_ids


# --------------------------------------------------------------------------------------------
# Read and cancel


async def get_run(session: AsyncSession, run_id: int) -> RoundsRunOut:
    run = await repo.get_run(session, run_id)
    if run is None:
        raise RoundsRunNotFound(run_id)
    rounds = await repo.rounds_of(session, [run.id])
    return run_out(run, rounds[run.id])


async def list_runs(session: AsyncSession, *, limit: int, before: int | None) -> RoundsRunPage:
    runs = await repo.list_runs(session, limit=limit, before=before)
    rounds = await repo.rounds_of(session, [r.id for r in runs])
    return RoundsRunPage(
        items=[run_out(r, rounds[r.id]) for r in runs],
        next_before=runs[-1].id if len(runs) == limit else None,
    )


async def cancel(session: AsyncSession, run_id: int) -> RoundsRunOut:
    """A queued run is cancelled at once; a running one at its next step, which cancels the
    current datagen job, DPO run or eval run. Cancelling a cancelled run is a no-op; a finished
    one is a 409."""
    run = await repo.get_run(session, run_id, for_update=True)
    if run is None:
        raise RoundsRunNotFound(run_id)
    if run.status in TERMINAL:
        if run.status != RunStatus.CANCELLED:
            ROUNDS_RUN.check(run.status, RunStatus.CANCELLED)
    elif run.status == RunStatus.QUEUED:
        await repo.transition(session, run_id, RunStatus.CANCELLED, stop_reason="cancelled")
    else:
        await repo.request_cancel(session, run_id)
    await session.flush()
    session.expire_all()
    return await get_run(session, run_id)


def round_out(row: Round) -> RoundOut:
    return RoundOut(
        number=row.number,
        status=row.status,  # type: ignore[arg-type]
        generator_model=row.generator_model,
        datagen_job_id=row.datagen_job_id,
        dpo_run_id=row.dpo_run_id,
        model_id=row.model_id,
        pairs=row.pairs,
        pairs_trained=row.pairs_trained,
        cost_usd=float(row.cost_usd or 0),
        eval_run_id=row.eval_run_id,
        score=row.score,
        start_score=row.start_score,
        improved=row.improved,
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def run_out(run: RoundsRun, rounds: list[Round]) -> RoundsRunOut:
    done = [r.model_id for r in rounds if r.model_id is not None]
    budget = run.request.get("budget_usd")
    best_round = _standing(rounds).best_round if run.request.get("evaluation") else None
    return RoundsRunOut(
        id=run.id,
        status=run.status,  # type: ignore[arg-type]
        name=run.name,
        request=run.request,
        start_model=run.start_model,
        stop_reason=run.stop_reason,  # type: ignore[arg-type]
        cost_usd=float(run.cost_usd or 0),
        budget_usd=float(budget) if budget is not None else None,
        rounds=[round_out(r) for r in rounds],
        model_id=done[-1] if done else None,
        best_round=best_round,
        best_model_id=None if best_round is None else _best_model_id(run, rounds, best_round),
        cancel_requested=run.cancel_requested,
        attempts=run.attempts,
        error=run.error,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


# --------------------------------------------------------------------------------------------
# The state machine


async def step(
    run_id: int, token: str | None, settings: Settings, send: Send
) -> tuple[float, str] | None:
    """One step of run ``run_id``: ``(seconds, token)`` to step again with, or None when this
    chain of steps ends (the run is terminal, unknown, or another chain owns it)."""
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        return await _step(make_sessionmaker(engine), run_id, token, settings, send)
    finally:
        await engine.dispose()


def stall_after_s(settings: Settings) -> float:
    """A run not stepped for this long has lost its chain of step messages."""
    return 10 * settings.rounds_poll_s + 2 * settings.job_lease_s


async def _step(
    sm: async_sessionmaker[AsyncSession],
    run_id: int,
    token: str | None,
    settings: Settings,
    send: Send,
) -> tuple[float, str] | None:
    async with sm() as session:
        run = await repo.get_run(session, run_id)
    if run is None or run.status in TERMINAL:
        return None
    idle_s = (now() - run.updated_at).total_seconds() if run.updated_at else float("inf")
    if run.step_token is not None and token != run.step_token and idle_s < stall_after_s(settings):
        log.info("rounds run %s: a stale step message (another chain steps it); dropped", run_id)
        return None
    owner = worker_identity()
    async with transaction(sm) as session:
        status = await repo.take_lease(session, run_id, owner, settings.job_lease_s)
    if status is None:
        # Another step holds the lease (a duplicate delivery, or a step of ours cut off by a
        # database outage): look again once it can have run out, with the same token. If the
        # other step goes on, it hands its successor a new token and this chain is dropped.
        async with sm() as session:
            held = await repo.get_run(session, run_id)
        if held is None or held.status in TERMINAL:
            return None
        return max(settings.rounds_poll_s, settings.job_lease_s), held.step_token or ""
    outbox: list[tuple[str, int]] = []
    new_token = uuid.uuid4().hex
    try:
        async with transaction(sm) as session:
            delay = await _advance(session, settings, run_id, outbox)
            await repo.set_step_token(session, run_id, new_token)
    except Exception as exc:
        if is_unavailable(exc):
            raise  # the task retries: nothing of this step was committed
        log.exception("rounds run %s: step failed", run_id)
        async with transaction(sm) as session:
            await repo.transition(
                session,
                run_id,
                RunStatus.FAILED,
                stop_reason="failed",
                error=f"step failed: {type(exc).__name__}: {exc}"[:2000],
            )
        return None
    finally:
        async with transaction(sm) as session:
            await repo.release_lease(session, run_id, owner)
    for task, arg in outbox:
        send(task, arg)
    return None if delay is None else (delay, new_token)


async def _advance(
    session: AsyncSession, settings: Settings, run_id: int, outbox: list[tuple[str, int]]
) -> float | None:
    """Move the run on by one move (in the caller's transaction); the delay until the next
    step, or None once the run is terminal. Tasks to send go to ``outbox``."""
    run = await repo.get_run(session, run_id, for_update=True)
    if run is None or run.status not in ACTIVE:
        return None
    if run.status == RunStatus.QUEUED:
        await repo.transition(session, run_id, RunStatus.RUNNING, started_at=now())
    request, topic_ids = _request(run)
    rounds = (await repo.rounds_of(session, [run_id]))[run_id]
    current = rounds[-1] if rounds else None
    poll = settings.rounds_poll_s

    if run.cancel_requested:
        if current is not None and current.status in ("generating", "training", "evaluating"):
            await _cancel_child(session, current)
            _finish_round(current, "cancelled")
        await repo.transition(session, run_id, RunStatus.CANCELLED, stop_reason="cancelled")
        return None

    if current is None or current.status == "succeeded":
        if len(rounds) >= request.rounds:
            await repo.transition(session, run_id, RunStatus.SUCCEEDED, stop_reason="completed")
            return None
        if request.evaluation is not None and _standing(rounds).stops(request.evaluation.patience):
            await repo.transition(
                session, run_id, RunStatus.SUCCEEDED, stop_reason="no_improvement"
            )
            return None
        spent = float(run.cost_usd or 0)
        budget = request.budget_usd
        if budget is not None and (spent >= budget or await _stopped_on_budget(session, current)):
            await repo.transition(
                session, run_id, RunStatus.SUCCEEDED, stop_reason="budget_exhausted"
            )
            return None
        model: dict[str, Any] = (
            {"id": current.model_id, "name": round_model_name(run, current.number)}
            if current is not None
            else {"id": run.start_model["id"], "name": run.start_model["name"]}
        )
        number = len(rounds) + 1
        job = job_request(
            request, topic_ids, str(model["name"]), None if budget is None else budget - spent
        )
        view, created = await datagen.create_job(
            session, settings, job, idempotency_key=f"rounds-{run_id}-r{number}"
        )
        await repo.add_round(
            session,
            rounds_run_id=run_id,
            number=number,
            status="generating",
            generator_model=model,
            datagen_job_id=view.id,
            cost_usd=Decimal(0),
        )
        if created:
            outbox.append((DATAGEN_RUN_JOB, view.id))
        return poll

    if current.status == "generating":
        assert current.datagen_job_id is not None
        view = await datagen.get_job_view(session, current.datagen_job_id)
        current.pairs = view.pairs
        current.cost_usd = Decimal(str(view.cost_usd))
        run.cost_usd = sum((r.cost_usd or Decimal(0) for r in rounds), Decimal(0))
        current.updated_at = now()
        if view.status in ACTIVE:
            return poll
        unusable = view.status != RunStatus.SUCCEEDED or view.pairs == 0
        if unusable and view.stop_reason == "budget_exhausted":
            # The budget ran out inside this round: the run ends there, the earlier rounds'
            # models stand (succeeded when there is one).
            _finish_round(current, "failed", f"budget exhausted with {view.pairs} pairs")
            target = RunStatus.SUCCEEDED if len(rounds) > 1 else RunStatus.FAILED
            await repo.transition(
                session, run_id, target, stop_reason="budget_exhausted",
                error=None if len(rounds) > 1 else current.error,
            )  # fmt: skip
            return None
        if unusable:
            why = view.error or view.stop_reason or f"{view.pairs} pairs"
            return await _fail(
                session,
                run,
                current,
                f"round {current.number}: datagen job {view.id} "
                f"ended {view.status} with {view.pairs} pairs ({why})",
            )
        job_ids = [r.datagen_job_id for r in rounds if r.datagen_job_id is not None]
        dpo = DPORequest(
            model=current.generator_model["name"],
            pairs=PairSelection(
                min_confidence=request.dpo.min_confidence,
                job_ids=job_ids if request.accumulate else [current.datagen_job_id],
                exclude_heldout=request.dpo.exclude_heldout,
            ),
            name=round_model_name(run, current.number),
            hyperparameters=request.dpo.hyperparameters,
            samples=request.dpo.samples,
        )
        try:
            # The model is a registry name: no local path to check against the data roots.
            train = await training.submit_dpo(session, dpo, roots=DataRoots.unrestricted())
        except ChatPGTError as exc:
            return await _fail(session, run, current, f"round {current.number}: DPO refused: {exc}")
        current.dpo_run_id = train.id
        current.pairs_trained = int(train.request.get("pairs_at_submit") or 0)
        current.status = "training"
        outbox.append((TRAIN_DPO, train.id))
        return poll

    if current.status == "training":
        assert current.dpo_run_id is not None
        train_run = await training_repo.get_run(session, current.dpo_run_id)
        if train_run is None:
            return await _fail(session, run, current, f"DPO run {current.dpo_run_id} is gone")
        if train_run.status in ACTIVE:
            return poll
        if train_run.status != RunStatus.SUCCEEDED:
            return await _fail(
                session,
                run,
                current,
                f"round {current.number}: DPO run {train_run.id} ended "
                f"{train_run.status}: {train_run.error or ''}".strip(),
            )
        registered = await training_repo.get_model_by_run(session, train_run.id)
        if registered is None:
            return await _fail(session, run, current, f"DPO run {train_run.id} registered no model")
        current.model_id = registered.id
        if request.evaluation is None:
            _finish_round(current, "succeeded")
            return 0.0  # the next round (or the end) at once
        best_id = _best_model_id(run, rounds, _standing(rounds[:-1]).best_round)
        if best_id is None:
            return await _fail(session, run, current, "the best round's model is gone")
        try:
            ev = await evaluation.submit(
                session,
                settings,
                eval_request(run, request, current, best_id),
                roots=DataRoots.unrestricted(),  # its file was checked at submit
            )
        except ChatPGTError as exc:
            return await _fail(
                session, run, current, f"round {current.number}: evaluation refused: {exc}"
            )
        current.eval_run_id = ev.id
        current.status = "evaluating"
        current.updated_at = now()
        outbox.append((EVAL_RUN, ev.id))
        return poll

    if current.status == "evaluating":
        assert current.eval_run_id is not None and request.evaluation is not None
        return await _evaluated(session, run, request, rounds, current, poll)

    # A failed or cancelled round ends the run (a step cut off after writing it).
    return await _fail(session, run, current, current.error or f"round {current.status}")


async def _evaluated(
    session: AsyncSession,
    run: RoundsRun,
    request: RoundsRequest,
    rounds: list[Round],
    current: Round,
    poll: float,
) -> float | None:
    """The evaluating round once its eval run finished: its score, whether it improved."""
    spec = request.evaluation
    assert spec is not None and current.eval_run_id is not None and current.model_id is not None
    eval_id = current.eval_run_id
    try:
        ev = await evaluation.get_run(session, eval_id)
    except NotFound:
        return await _fail(session, run, current, f"eval run {eval_id} is gone")
    if ev.status in ACTIVE:
        return poll
    if ev.status != RunStatus.SUCCEEDED:
        why = f": {ev.error}" if ev.error else ""
        return await _fail(
            session,
            run,
            current,
            f"round {current.number}: eval run {eval_id} ended {ev.status}{why}",
        )
    before = _standing(rounds[:-1])
    best_id = _best_model_id(run, rounds, before.best_round)
    score = model_score(ev.results, current.model_id, spec.metric)
    best = None if best_id is None else model_score(ev.results, best_id, spec.metric)
    if score is None or best is None:
        missing = current.model_id if score is None else best_id
        return await _fail(
            session, run, current, f"round {current.number}: eval run {eval_id} has no "
            f"{spec.metric} for model {missing} (e.g. no matchup was judged)"
        )  # fmt: skip
    improved, _ = stopping.judge_round(
        before,
        current.number,
        score,
        best,
        higher_is_better=spec.higher_is_better,
        min_improvement=spec.min_improvement,
    )
    current.score = score
    current.start_score = model_score(ev.results, int(current.generator_model["id"]), spec.metric)
    current.improved = improved
    _finish_round(current, "succeeded")
    return 0.0  # the next round, or the end (completed, no_improvement) at once


async def _stopped_on_budget(session: AsyncSession, row: Round | None) -> bool:
    """The round's datagen job stopped because the budget it was given ran out."""
    if row is None or row.datagen_job_id is None:
        return False
    view = await datagen.get_job_view(session, row.datagen_job_id)
    return view.stop_reason == "budget_exhausted"


def _finish_round(row: Round, status: str, error: str | None = None) -> None:
    row.status = status
    row.error = error
    row.finished_at = row.updated_at = now()


async def _fail(session: AsyncSession, run: RoundsRun, row: Round, error: str) -> float | None:
    """End the round and the run as failed; None: no further step."""
    _finish_round(row, "failed", error)
    await repo.transition(session, run.id, RunStatus.FAILED, stop_reason="failed", error=error)
    return None


async def _cancel_child(session: AsyncSession, row: Round) -> None:
    """Cancel the round's datagen job, DPO run or eval run; one that already finished stays as
    it is."""
    try:
        if row.status == "evaluating" and row.eval_run_id is not None:
            await evaluation.cancel_run(session, row.eval_run_id)
        elif row.status == "training" and row.dpo_run_id is not None:
            await training.cancel_run(session, row.dpo_run_id)
        elif row.datagen_job_id is not None:
            await datagen.cancel_job(session, row.datagen_job_id)
    except (InvalidState, NotFound):
        pass


async def stalled_runs(settings: Settings) -> list[int]:
    """Active runs whose chain of steps was lost; the sweep and a starting datagen worker send
    each a step without a token."""
    return await run_once(
        settings.database_url, lambda s: repo.stalled_runs(s, stall_after_s(settings))
    )
