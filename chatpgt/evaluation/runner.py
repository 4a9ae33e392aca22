"""Running one evaluation in a gpu worker: claim it, hold its lease, measure, write the report.

Same life as a training run (lease, heartbeat, cancel flag read at every write, at most
``MAX_ATTEMPTS``; an error becomes a failed run with its reason, never a Celery retry). A run
whose worker died starts over (its measurements are cheap next to training). Models are
evaluated one at a time and freed before the next, so a GPU holds one model at a time.

This module does not import torch at import time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatpgt.evaluation import stats
from chatpgt.evaluation.repository import EvalSnapshot, EvalStore
from chatpgt.orchestration.leases import worker_identity
from chatpgt.orchestration.status import TERMINAL, RunStatus
from chatpgt.settings import Settings, get_settings
from chatpgt.training import corpus
from chatpgt.training.errors import TrainingDataError
from chatpgt.training.execution import (
    MAX_ATTEMPTS,
    ORPHAN_QUEUED_AFTER_S,
    RunReporter,
    describe,
    lease_heartbeat,
    make_sync_engine,
)

log = logging.getLogger(__name__)
_SAMPLE_CHUNK = 20  # SampleSpec takes at most 20 prompts


class Cancelled(Exception):
    """The run was cancelled (or its lease lost) between two measurements."""


class Progress:
    """Counts units of work (an essay scored, an essay generated, a matchup judged)."""

    def __init__(self, reporter: RunReporter, total: int) -> None:
        self.reporter = reporter
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()
        self.fields: dict[str, Any] = {}

    def stage(self, stage: str, **fields: Any) -> None:
        self.fields = {"stage": stage, **fields}
        self._write(force=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        self._write(force=False)
        if self.reporter.should_stop:
            raise Cancelled

    def _write(self, *, force: bool) -> None:
        elapsed = time.monotonic() - self.t0
        eta = round(elapsed / self.done * (self.total - self.done), 1) if self.done else None
        self.reporter.report(
            progress={**self.fields, "done": self.done, "total": self.total, "eta_s": eta},
            force=force,
        )


def execute_eval(run_id: int, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    engine = make_sync_engine(settings)
    try:
        return _execute(EvalStore(engine), run_id, settings)
    finally:
        engine.dispose()


def recoverable_eval_runs(settings: Settings | None = None) -> list[tuple[int, float]]:
    settings = settings or get_settings()
    engine = make_sync_engine(settings)
    try:
        return EvalStore(engine).orphaned_eval_runs(ORPHAN_QUEUED_AFTER_S)
    finally:
        engine.dispose()


def _execute(store: EvalStore, run_id: int, settings: Settings) -> str:
    snapshot = store.eval_snapshot(run_id)
    if snapshot is None:
        return "missing"
    if snapshot.status in TERMINAL:
        return "finished"
    owner = worker_identity()
    if not store.claim(run_id, owner, settings.job_lease_s, MAX_ATTEMPTS):
        again = store.eval_snapshot(run_id)
        if again is not None and again.lease_expired and again.attempts >= MAX_ATTEMPTS:
            store.finish(
                run_id,
                None,
                RunStatus.FAILED,
                error="gave up after "
                f"{again.attempts} attempts: the worker stopped during each one",
            )
            return RunStatus.FAILED
        return "busy"
    snapshot = store.eval_snapshot(run_id)
    assert snapshot is not None
    if snapshot.cancel_requested:
        store.finish(run_id, owner, RunStatus.CANCELLED)
        return RunStatus.CANCELLED
    reporter = RunReporter(store, run_id, owner)
    run_dir = Path(
        snapshot.artifacts.get("run_dir")
        or settings.artifacts_dir.resolve() / "evaluation" / f"eval-{run_id}-{uuid.uuid4().hex[:8]}"
    )
    reporter.report(artifacts={"run_dir": str(run_dir)}, force=True)
    lease_s, beat_s = settings.job_lease_s, settings.job_heartbeat_s
    with lease_heartbeat(reporter, lease_s=lease_s, interval_s=beat_s):
        try:
            report = evaluate(snapshot, store, settings, reporter, run_dir)
        except Cancelled:
            if reporter.lost.is_set():
                return "lost"
            store.finish(run_id, owner, RunStatus.CANCELLED)
            return RunStatus.CANCELLED
        except Exception as exc:
            log.exception("evaluation run %s failed", run_id)
            if reporter.lost.is_set():
                return "lost"
            store.finish(run_id, owner, RunStatus.FAILED, error=describe(exc))
            return RunStatus.FAILED
    from chatpgt.evaluation.report import clean, write_report

    json_path, html_path = write_report(report, run_dir)
    reporter.report(
        artifacts={"report_json": str(json_path), "report_html": str(html_path)}, force=True
    )
    ok = store.finish(run_id, owner, RunStatus.SUCCEEDED, results=clean(summary(report)))
    return RunStatus.SUCCEEDED if ok else "lost"


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the run row keeps: the report without generations and per-essay lists."""

    def slim(entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if k not in ("generations", "per_essay")}
        if "descriptive" in out:
            out["descriptive"] = {k: v for k, v in out["descriptive"].items() if k != "lengths"}
        return out

    return {
        "models": [slim(m) for m in report["models"]],
        "real_essays": slim(report.get("real_essays") or {}),
        "reference": report.get("reference"),
        "style_classifier": report.get("style_classifier"),
        "judge": report.get("judge"),
        "notes": report.get("notes"),
        "timings_s": report.get("timings_s"),
    }


def _load_essays(
    snapshot: EvalSnapshot, settings: Settings
) -> tuple[list[corpus.Essay], list[corpus.Essay]]:
    held = snapshot.heldout
    essays = corpus.load_essays(held["corpus"], cache_dir=str(settings.artifacts_dir / "cache"))

    def pick(entries: list[dict[str, Any]]) -> list[corpus.Essay]:
        out = []
        for e in entries:
            i = int(e["index"])
            if i >= len(essays) or essays[i].title != e["title"]:
                raise TrainingDataError(
                    f"the corpus {held['corpus']!r} changed since SFT run {held['sft_run_id']}: "
                    f"essay {i} is no longer {e['title']!r}"
                )
            out.append(essays[i])
        return out

    return pick(held["essays"]), pick(held.get("train", []))


def evaluate(
    snapshot: EvalSnapshot,
    store: EvalStore,
    settings: Settings,
    reporter: RunReporter,
    run_dir: Path,
) -> dict[str, Any]:
    """Every metric of every model; returns the report (see :mod:`.report`)."""
    from chatpgt.evaluation.perplexity import (
        ExampleSpec,
        essay_parts,
        perplexity_interval,
        score_essays,
    )
    from chatpgt.style.classifier import StyleClassifier
    from chatpgt.training import recipes
    from chatpgt.training.schemas import SampleSpec

    if settings.local_torch_threads:  # as the local provider does: a shared CPU, one thread
        import torch

        torch.set_num_threads(settings.local_torch_threads)
    req = snapshot.request
    samples, seed = int(req["bootstrap_samples"]), int(req["seed"])
    timings: dict[str, float] = {}
    t = time.monotonic()
    held, train = _load_essays(snapshot, settings)
    titles = [e.title for e in held]
    n_models = len(snapshot.models)
    judge_units = 2 * len(held) * n_models if req.get("judge") else 0
    progress = Progress(
        reporter, n_models * len(held) * (2 if req["perplexity"] else 1) + judge_units
    )
    notes: list[str] = []

    classifier = None
    if req["style"]["enabled"]:
        progress.stage("style classifier")
        style = req["style"]
        if style.get("other_essays"):
            other = [e.text for e in corpus.load_essays(style["other_essays"])][
                : style["max_other"]
            ]
        else:
            other = store.candidate_essays(style["max_other"])
        classifier = StyleClassifier.train(
            [e.text for e in train],
            other,
            chunk_words=style["chunk_words"],
            folds=style["folds"],
            seed=seed,
        )
        timings["style_classifier_s"] = round(time.monotonic() - t, 2)
        if "warning" in classifier.describe():
            notes.append("style classifier: " + classifier.describe()["warning"])
        notes.append(
            "style classifier: trained on the SFT run's training essays vs "
            + (
                "the file " + style["other_essays"]
                if style.get("other_essays")
                else "the database's candidate essays (other models)"
            )
            + f"; {classifier.features} features; cross-validated balanced accuracy "
            + (f"{classifier.cv_accuracy:.3f}" if classifier.cv_accuracy is not None else "n/a")
            + ". It is not the classifier of the style_classifier datagen judge (word n-grams, "
            "another split)."
        )

    ex = snapshot.heldout["examples"]
    spec = ExampleSpec(
        templates=ex["templates"],
        continuation_template=ex["continuation_template"],
        context_words=ex["context_words"],
        max_length=ex["max_length"],
        seed=ex["seed"],
    )
    gen = req["generation"]
    prompts = [gen["template"].format(title=title) for title in titles]
    device = recipes.Device.detect()
    models_out: list[dict[str, Any]] = []
    for i, m in enumerate(snapshot.models):
        label = {"model": m["name"], "model_index": i + 1, "models": n_models}
        entry: dict[str, Any] = {k: m.get(k) for k in ("name", "kind", "ref", "path", "model_id")}
        timing: dict[str, float] = {}
        t = time.monotonic()
        tokenizer, _ = recipes.load_tokenizer(m["path"])
        model: Any = recipes.load_model(m["path"], device)
        if device.cuda:
            model = model.to("cuda")
        timing["load_s"] = round(time.monotonic() - t, 2)
        if req["perplexity"]:
            progress.stage("perplexity", **label)
            t = time.monotonic()
            measure, count = recipes.token_counters(tokenizer)
            parts = essay_parts(held, spec, measure, count)
            scores = score_essays(
                model, tokenizer, parts, titles, on_essay=lambda _: progress.step()
            )
            interval = perplexity_interval(scores, samples=samples, seed=seed)
            entry["perplexity"] = interval.as_dict()
            entry["per_essay"] = [
                {"title": s.title, "perplexity": s.perplexity, "tokens": s.tokens, "parts": s.parts}
                for s in scores
            ]
            timing["perplexity_s"] = round(time.monotonic() - t, 2)
        progress.stage("generation", **label)
        t = time.monotonic()
        texts: list[str] = []
        for start in range(0, len(prompts), _SAMPLE_CHUNK):
            chunk = prompts[start : start + _SAMPLE_CHUNK]
            spec_s = SampleSpec(
                prompts=chunk,
                max_new_tokens=gen["max_new_tokens"],
                temperature=gen["temperature"],
                top_p=gen["top_p"],
            )
            for sample in recipes.generate_samples(
                model, tokenizer, spec_s, seed=gen["seed"] + start
            ):
                texts.append(sample["text"])
                progress.step()
        timing["generation_s"] = round(time.monotonic() - t, 2)
        entry["generations"] = [
            {"title": ti, "text": x} for ti, x in zip(titles, texts, strict=True)
        ]
        if classifier is not None:
            t = time.monotonic()
            entry["style"] = stats.bootstrap(
                classifier.score(texts), stats.mean, samples=samples, seed=seed
            ).as_dict()
            timing["style_s"] = round(time.monotonic() - t, 2)
        entry["descriptive"] = stats.descriptive(texts, seed=seed, samples=samples)
        entry["timings_s"] = timing
        models_out.append(entry)
        del model
        gc.collect()
        if device.cuda:
            import torch

            torch.cuda.empty_cache()

    real: dict[str, Any] = {
        "descriptive": stats.descriptive([e.text for e in held], seed=seed, samples=samples)
    }
    if classifier is not None:
        real["style"] = stats.bootstrap(
            classifier.score([e.text for e in held]), stats.mean, samples=samples, seed=seed
        ).as_dict()

    reference = _reference(req, snapshot.models)
    if req.get("judge"):
        progress.stage("judging")
        t = time.monotonic()
        ref_texts = (
            [e.text for e in held]
            if reference["kind"] == "real"
            else [g["text"] for g in models_out[reference["index"]]["generations"]]
        )
        asyncio.run(
            _judge_all(req, settings, prompts, titles, models_out, ref_texts, reference, progress)
        )
        timings["judging_s"] = round(time.monotonic() - t, 2)
        notes.append(
            f"win rate: each model's essay vs {reference['name']} on every held-out title, judged "
            "in both orders; a split verdict is a tie (half a win) and a flip; the "
            "length-controlled rate is sigmoid(intercept) of a logistic fit on tanh(normalised "
            "length difference), as in AlpacaEval 2."
        )
    notes.append(
        "perplexity: completion tokens only, in the SFT run's chat format and parts "
        "(long essays split as in training, never truncated); lower is closer."
    )
    notes.append(
        "intervals: 95% percentile bootstrap over essays (titles), seed "
        f"{seed}, {samples} resamples."
    )
    progress.stage("report")
    return {
        "run_id": snapshot.id,
        "name": snapshot.name,
        "created_at": snapshot.created_at.isoformat(),
        "heldout": {k: v for k, v in snapshot.heldout.items() if k != "train"},
        "models": models_out,
        "real_essays": real,
        "reference": reference,
        # Named, so the report says which classifier scored (never the datagen judge's).
        "style_classifier": (
            {"name": "evaluation_style_classifier", **classifier.describe()}
            if classifier is not None
            else None
        ),
        "judge": req.get("judge"),
        "generation": gen,
        "device": "cuda" if device.cuda else "cpu",
        "notes": notes,
        "timings_s": timings,
    }


def _reference(req: dict[str, Any], models: list[dict[str, Any]]) -> dict[str, Any]:
    wanted = req["reference"]
    if wanted == "sft":
        for i, m in enumerate(models):
            if m.get("kind") == "sft":
                return {"kind": "model", "index": i, "name": m["name"]}
        wanted = "real"
    if wanted == "real":
        return {"kind": "real", "index": None, "name": "the real held-out essay"}
    for i, m in enumerate(models):
        if str(m["ref"]) == wanted:
            return {"kind": "model", "index": i, "name": m["name"]}
    raise TrainingDataError(f"reference {wanted!r} is not among the models")


def make_judge(pool: Any, spec: dict[str, Any]) -> Callable[[str, str, str], Any]:
    """A :data:`chatpgt.evaluation.winrate.Judge` over a started provider pool."""
    from chatpgt.datagen.judging import JudgeParseError, parse_verdict
    from chatpgt.datagen.prompts import judge_messages
    from chatpgt.providers.types import ChatRequest, ProviderError

    async def judge(prompt: str, a: str, b: str) -> str | None:
        one_letter = spec["method"] == "ab_probability"
        req = ChatRequest(
            provider=spec["provider"],
            model=spec["model"],
            messages=judge_messages(prompt, a, b, one_letter=one_letter),
            temperature=0.0,
            max_tokens=1 if one_letter else spec["max_tokens"],
            json_mode=not one_letter,
        )
        try:
            if one_letter:
                ab = await pool.judge_ab(req)
                if ab.mass < spec["min_letter_mass"]:
                    return None
                return "B" if ab.p_b > ab.p_a else "A"
            result = await pool.chat(req)
            return str(parse_verdict(result.text).winner)
        except (ProviderError, JudgeParseError) as exc:
            log.warning("judgment failed: %s", exc)
            return None

    return judge


async def _judge_all(
    req: dict[str, Any],
    settings: Settings,
    prompts: list[str],
    titles: list[str],
    models_out: list[dict[str, Any]],
    ref_texts: list[str],
    reference: dict[str, Any],
    progress: Progress,
) -> None:
    from chatpgt.evaluation import winrate
    from chatpgt.providers.client import ProviderPool

    samples, seed = int(req["bootstrap_samples"]), int(req["seed"])
    async with ProviderPool(
        settings.provider_configs(), local_options=settings.local_options()
    ) as pool:
        base_judge = make_judge(pool, req["judge"])

        async def counted(prompt: str, a: str, b: str) -> str | None:
            verdict = await base_judge(prompt, a, b)
            progress.step()
            return verdict

        for i, entry in enumerate(models_out):
            if reference["kind"] == "model" and reference["index"] == i:
                entry["win_rate"] = {"reference": True}
                progress.step(2 * len(titles))
                continue
            texts = [g["text"] for g in entry["generations"]]
            matchups = await winrate.judge_both_orders(counted, prompts, titles, texts, ref_texts)
            entry["win_rate"] = winrate.summarize(matchups, samples=samples, seed=seed)
