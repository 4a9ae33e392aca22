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
import random
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT
from chatpgt.evaluation import stats
from chatpgt.evaluation.repository import EvalSnapshot, EvalStore
from chatpgt.orchestration import service as leased
from chatpgt.orchestration.leases import worker_identity
from chatpgt.orchestration.status import RunStatus
from chatpgt.settings import Settings, get_settings
from chatpgt.style.controls import cut_words, random_token_texts, shuffled_words
from chatpgt.training import corpus
from chatpgt.training.errors import TrainingDataError
from chatpgt.training.execution import (
    MAX_ATTEMPTS,
    ORPHAN_QUEUED_AFTER_S,
    RunReporter,
    describe,
    lease_heartbeat,
    sync_store,
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
    with sync_store(EvalStore, settings) as store:
        return _execute(store, run_id, settings)


def recoverable_eval_runs(settings: Settings | None = None) -> list[tuple[int, float]]:
    with sync_store(EvalStore, settings or get_settings()) as store:
        return store.orphaned_eval_runs(ORPHAN_QUEUED_AFTER_S)


def _execute(store: EvalStore, run_id: int, settings: Settings) -> str:
    owner = worker_identity()
    claimed = leased.claim_sync(
        store, store.eval_snapshot, run_id, owner, settings.job_lease_s, MAX_ATTEMPTS
    )
    if claimed != "claimed":
        return claimed
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

    try:
        json_path, html_path = write_report(report, run_dir)
        results = clean(summary(report))
    except Exception as exc:  # a report that cannot be written fails the run, never strands it
        log.exception("evaluation run %s: the report could not be written", run_id)
        store.finish(run_id, owner, RunStatus.FAILED, error=describe(exc))
        return RunStatus.FAILED
    reporter.report(
        artifacts={"report_json": str(json_path), "report_html": str(html_path)}, force=True
    )
    ok = store.finish(run_id, owner, RunStatus.SUCCEEDED, results=results)
    return RunStatus.SUCCEEDED if ok else "lost"


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the run row keeps: the report without generations and per-essay lists."""

    def slim(entry: dict[str, Any]) -> dict[str, Any]:
        out = {
            k: v for k, v in entry.items() if k not in ("generations", "per_essay", "style_scores")
        }
        if "descriptive" in out:
            out["descriptive"] = {k: v for k, v in out["descriptive"].items() if k != "lengths"}
        return out

    return {
        "models": [slim(m) for m in report["models"]],
        "controls": [slim(m) for m in report.get("controls") or []],
        "real_essays": slim(report.get("real_essays") or {}),
        "reference": report.get("reference"),
        "style_classifier": report.get("style_classifier"),
        "judge": report.get("judge"),
        "human_win_rates": report.get("human_win_rates") or [],
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
    from chatpgt.evaluation.perplexity import ExampleSpec
    from chatpgt.training import recipes

    if settings.local_torch_threads:  # as the local provider does: a shared CPU, one thread
        import torch

        torch.set_num_threads(settings.local_torch_threads)
    req = snapshot.request
    samples, seed = int(req["bootstrap_samples"]), int(req["seed"])
    timings: dict[str, float] = {}
    t = time.monotonic()
    held, train = _load_essays(snapshot, settings)
    titles = [e.title for e in held]
    controls = bool(req.get("controls"))
    models = list(snapshot.models)
    if controls:  # the first model's architecture with random weights: the floor of every figure
        models.append(
            {
                **models[0],
                "name": "random weights",
                "kind": "control",
                "model_id": None,
                "ref": "control:random-weights",
                "random_weights": True,
            }
        )
    n_models = len(models)
    judge_units = 2 * len(held) * len(snapshot.models) if req.get("judge") else 0
    progress = Progress(
        reporter,
        n_models * len(held) * (2 if req["perplexity"] else 1)
        + judge_units
        + (len(held) * (n_models + 2) if req.get("fluency", True) else 0),
    )
    notes: list[str] = []
    base_tokenizer, _ = recipes.load_tokenizer(models[0]["path"])

    classifier = None
    no_style: str | None = None
    if req["style"]["enabled"]:
        progress.stage("style classifier")
        # The trained models' own essays (e.g. the on-policy ones DPO learnt from) are not
        # "other writers": they are attempts at the author. A base model's essays are.
        evaluated = {
            str(m[k])
            for m in models
            if m.get("kind") in ("sft", "dpo")
            for k in ("name", "path", "ref")
            if m.get(k)
        }
        from chatpgt.style.classifier import NotEnoughTexts

        try:
            classifier = _train_classifier(req, store, train, base_tokenizer, seed, evaluated)
        except NotEnoughTexts as exc:  # e.g. every candidate essay is an evaluated model's own
            no_style = f"no style classifier could be trained: {exc}"
            notes.append(f"style not measured: {no_style}")
        timings["style_classifier_s"] = round(time.monotonic() - t, 2)

    def style_of(texts: list[str]) -> dict[str, Any]:
        if classifier is None and no_style:
            return {"style": {"not_measured": no_style}}
        return _style(classifier, texts, samples, seed)

    ex = snapshot.heldout["examples"]
    spec = ExampleSpec(
        templates=ex["templates"],
        continuation_template=ex["continuation_template"],
        context_words=ex["context_words"],
        max_length=ex["max_length"],
        seed=ex["seed"],
        # Records from before the system prompt was stored: SFT's default then.
        system_prompt=ex.get("system_prompt", DEFAULT_SYSTEM_PROMPT),
    )
    template_indices = [e.get("template") for e in snapshot.heldout["essays"]]
    gen = req["generation"]
    prompts = [gen["template"].format(title=title) for title in titles]
    device = recipes.Device.detect()
    models_out: list[dict[str, Any]] = []
    for i, m in enumerate(models):
        label = {"model": m["name"], "model_index": i + 1, "models": n_models}
        entry: dict[str, Any] = {k: m.get(k) for k in ("name", "kind", "ref", "path", "model_id")}
        timing: dict[str, float] = {}
        t = time.monotonic()
        tokenizer, model = _load(m, device, seed)
        timing["load_s"] = round(time.monotonic() - t, 2)
        if req["perplexity"]:
            progress.stage("perplexity", **label)
            t = time.monotonic()
            entry.update(_perplexity(model, tokenizer, held, spec, template_indices, req, progress))
            timing["perplexity_s"] = round(time.monotonic() - t, 2)
        progress.stage("generation", **label)
        t = time.monotonic()
        texts = _generate(model, tokenizer, prompts, gen, spec.system_prompt, progress)
        timing["generation_s"] = round(time.monotonic() - t, 2)
        entry["generations"] = [
            {"title": ti, "text": x} for ti, x in zip(titles, texts, strict=True)
        ]
        entry.update(style_of(texts))
        entry["descriptive"] = stats.descriptive(texts, seed=seed, samples=samples)
        entry["timings_s"] = timing
        models_out.append(entry)
        _free(model, device)

    # Real essays cut to the generations' length: the same length for every figure that
    # depends on it (distinct-n, repetition, style), and the author's own words shuffled.
    gen_words = [len(g["text"].split()) for m in models_out for g in m["generations"]]
    cut = max(1, round(stats.mean(gen_words))) if gen_words else 1
    real_texts = cut_words([e.text for e in held], cut)
    real: dict[str, Any] = {
        "name": "real held-out essays",
        "kind": "real",
        "cut_words": cut,
        "generations": [{"title": ti, "text": x} for ti, x in zip(titles, real_texts, strict=True)],
        "descriptive": stats.descriptive(real_texts, seed=seed, samples=samples),
        **style_of(real_texts),
    }
    text_controls: list[dict[str, Any]] = []
    if controls:
        shuffled = shuffled_words(real_texts, seed=seed)
        text_controls.append(
            {
                "name": "shuffled words",
                "kind": "control",
                "generations": [
                    {"title": ti, "text": x} for ti, x in zip(titles, shuffled, strict=True)
                ],
                "descriptive": stats.descriptive(shuffled, seed=seed, samples=samples),
                **style_of(shuffled),
            }
        )
    if req.get("fluency", True):
        t = time.monotonic()
        progress.stage("fluency", model=models[0]["name"])
        tokenizer, model = _load(models[0], device, seed)
        for entry in [*models_out, real, *text_controls]:
            entry.update(
                _fluency(model, tokenizer, entry["generations"], prompts, spec, samples, seed)
            )
            progress.step(len(held))
        _free(model, device)
        timings["fluency_s"] = round(time.monotonic() - t, 2)
        notes.append(
            f"fluency: perplexity of each text under {models[0]['name']} (the first model), as "
            "the answer to its prompt; text without fluency (random weights, shuffled words) "
            "scores far higher, so lower distinct-n or repetition is only read beside it."
        )
    _paired(models_out, samples, seed)

    reference = _reference(req, snapshot.models)
    if req.get("judge"):
        progress.stage("judging")
        t = time.monotonic()
        ref_texts = (
            [e.text for e in held]
            if reference["kind"] == "real"
            else [g["text"] for g in models_out[reference["index"]]["generations"]]
        )
        judged = [m for m in models_out if m.get("kind") != "control"]
        asyncio.run(
            _judge_all(req, settings, prompts, titles, judged, ref_texts, reference, progress)
        )
        timings["judging_s"] = round(time.monotonic() - t, 2)
        notes.append(
            f"win rate: each model's essay vs {reference['name']} on every held-out title, judged "
            "in both orders; a split verdict is a tie (half a win) and a flip; the "
            "length-controlled rate is sigmoid(intercept) of a logistic fit on tanh(normalised "
            "length difference), as in AlpacaEval 2."
        )
    notes.extend(_notes(classifier, req, spec, cut, controls))
    notes.append(
        "intervals: 95% percentile bootstrap over essays (titles), seed "
        f"{seed}, {samples} resamples; comparisons ('vs') are paired: the same essays resampled "
        "for both models."
    )
    progress.stage("report")
    human = _human_win_rates(store, models_out)
    if human:
        notes.append(
            "human votes: the blind playground's votes between two of these models so far "
            "(/ui/playground; GET /arena/win-rates has the latest); win rate over decisive "
            "votes, ties apart, with its 95% Wilson interval."
        )
    return {
        "human_win_rates": human,
        "run_id": snapshot.id,
        "name": snapshot.name,
        "created_at": snapshot.created_at.isoformat(),
        "heldout": {k: v for k, v in snapshot.heldout.items() if k != "train"},
        "models": [m for m in models_out if m.get("kind") != "control"],
        "controls": [m for m in models_out if m.get("kind") == "control"] + text_controls,
        "real_essays": real,
        "reference": reference,
        # Named, so the report says which classifier scored (never the datagen judge's).
        "style_classifier": (
            {"name": "evaluation_style_classifier", **classifier.describe()}
            if classifier is not None
            else {"name": "evaluation_style_classifier", "not_measured": no_style}
            if no_style
            else None
        ),
        "judge": req.get("judge"),
        "generation": gen,
        "device": "cuda" if device.cuda else "cpu",
        "notes": notes,
        "timings_s": timings,
    }


def _human_win_rates(store: EvalStore, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pair of the evaluated registered models, the playground's votes between them."""
    from chatpgt.review.arena import tally

    names = {int(m["model_id"]): str(m["name"]) for m in models if m.get("model_id")}
    if len(names) < 2:
        return []
    rates = tally(store.human_votes(names), names)
    return [r.as_dict() for r in rates if r.first_id in names and r.second_id in names]


def _train_classifier(
    req: dict[str, Any],
    store: EvalStore,
    train: list[corpus.Essay],
    tokenizer: Any,
    seed: int,
    evaluated: Collection[str] = (),
) -> Any:
    """The evaluation's style classifier: the SFT run's training essays vs other writers' essays
    (never those the ``evaluated`` models wrote) and degenerate texts (the training essays'
    words shuffled, random tokens)."""
    from chatpgt.style.classifier import StyleClassifier, chunk

    style = req["style"]
    if style.get("other_essays"):
        other = [e.text for e in corpus.load_essays(style["other_essays"])][: style["max_other"]]
    else:
        other = store.candidate_essays(style["max_other"], exclude_models=evaluated)
    words = style["chunk_words"]
    author = [c for e in train for c in chunk(e.text, words)]
    if len(author) > style.get("max_author_chunks", len(author)):
        author = random.Random(seed).sample(author, style["max_author_chunks"])
    # Degenerate texts: every sampled author chunk with its words shuffled (up to 1,000: the
    # classifier must learn that the author's words without the author's order are not the
    # author, and a few dozen shuffled chunks against thousands of real ones taught it nothing
    # in the demo: shuffled essays scored 1.00), and random-token text.
    shuffled = shuffled_words(author[:1000], seed=seed)
    noise = random_token_texts(
        lambda ids: str(tokenizer.decode(ids)),
        len(tokenizer),
        count=max(4, min(200, len(other))),
        tokens=round(words * 1.3),
        seed=seed,
        skip=tokenizer.all_special_ids,
    )
    degenerate = shuffled + noise
    classifier = StyleClassifier.train(
        author,
        other,
        degenerate=degenerate,
        chunk_words=words,
        folds=style["folds"],
        seed=seed,
    )
    classifier.trained_on["author_essays"] = len(train)
    return classifier


def _load(m: dict[str, Any], device: Any, seed: int) -> tuple[Any, Any]:
    """(tokenizer, model) of a model entry; ``random_weights``: its architecture, freshly
    initialised with ``seed``."""
    from chatpgt.training import recipes

    tokenizer, _ = recipes.load_tokenizer(m["path"])
    if m.get("random_weights"):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(seed)
        model: Any = AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(m["path"]), dtype=device.dtype
        )
    else:
        model = recipes.load_model(m["path"], device)
    if device.cuda:
        model = model.to("cuda")
    return tokenizer, model.eval()


def _free(model: Any, device: Any) -> None:
    del model
    gc.collect()
    if device.cuda:
        import torch

        torch.cuda.empty_cache()


def _perplexity(
    model: Any,
    tokenizer: Any,
    held: list[corpus.Essay],
    spec: Any,
    template_indices: list[int | None],
    req: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    from chatpgt.evaluation.perplexity import essay_parts, perplexity_interval, score_essays
    from chatpgt.training import recipes

    measure, count = recipes.token_counters(tokenizer, spec.system_prompt)
    parts = essay_parts(held, spec, measure, count, template_indices)
    scores = score_essays(
        model, tokenizer, parts, [e.title for e in held], on_essay=lambda _: progress.step()
    )
    interval = perplexity_interval(
        scores, samples=int(req["bootstrap_samples"]), seed=int(req["seed"])
    )
    return {
        "perplexity": interval.as_dict(),
        "per_essay": [
            {
                "title": s.title,
                "perplexity": s.perplexity,
                "nll": s.nll,
                "tokens": s.tokens,
                "parts": s.parts,
            }
            for s in scores
        ],
    }


def _generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    gen: dict[str, Any],
    system_prompt: str | None,
    progress: Progress,
) -> list[str]:
    from chatpgt.training import recipes
    from chatpgt.training.schemas import SampleSpec

    texts: list[str] = []
    batch = 8
    for start in range(0, len(prompts), batch):
        spec = SampleSpec(
            prompts=prompts[start : start + batch],
            max_new_tokens=gen["max_new_tokens"],
            temperature=gen["temperature"],
            top_p=gen["top_p"],
            system_prompt=system_prompt,
        )
        for sample in recipes.generate_samples(
            model, tokenizer, spec, seed=gen["seed"] + start, batch_size=batch
        ):
            texts.append(sample["text"])
        progress.step(len(spec.prompts))
    return texts


def _style(classifier: Any, texts: list[str], samples: int, seed: int) -> dict[str, Any]:
    """The style score of ``texts`` (interval and per text), or why it is not measured."""
    if classifier is None:
        return {}
    scores = classifier.score(texts)
    reason = classifier.unreliable()
    if reason is not None:
        return {"style": {"not_measured": reason}, "style_scores": scores}
    interval = stats.bootstrap(scores, stats.mean, samples=samples, seed=seed)
    return {"style": interval.as_dict(), "style_scores": scores}


def _fluency(
    model: Any,
    tokenizer: Any,
    generations: list[dict[str, Any]],
    prompts: list[str],
    spec: Any,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """Perplexity of each text as the answer to its prompt under ``model`` (the base)."""
    from chatpgt.datagen.prompts import generation_messages
    from chatpgt.evaluation.perplexity import EssayScore, perplexity_interval, score_essays

    rows = [
        [
            {
                "prompt": generation_messages(prompt, spec.system_prompt),
                "completion": [{"role": "assistant", "content": g["text"]}],
            }
        ]
        for prompt, g in zip(prompts, generations, strict=True)
    ]
    scores = score_essays(model, tokenizer, rows, [g["title"] for g in generations])
    scored = [s for s in scores if s.tokens > 0]
    if not scored:
        return {}
    per_text: list[EssayScore] = scored
    return {
        "fluency": perplexity_interval(per_text, samples=samples, seed=seed).as_dict(),
    }


def _paired(models_out: list[dict[str, Any]], samples: int, seed: int) -> None:
    """Each model against the one before it (a control against the first model): the
    perplexity ratio and the style difference, with paired bootstrap intervals over essays."""
    from chatpgt.evaluation.perplexity import EssayScore, corpus_perplexity

    def essays(entry: dict[str, Any]) -> list[EssayScore]:
        return [
            EssayScore(title=e["title"], nll=e["nll"], tokens=e["tokens"], parts=e["parts"])
            for e in entry.get("per_essay") or []
        ]

    for i, entry in enumerate(models_out):
        if i == 0:
            continue
        prev = models_out[0] if entry.get("kind") == "control" else models_out[i - 1]
        out: dict[str, Any] = {"vs": prev["name"]}
        a, b = essays(entry), essays(prev)
        if a and len(a) == len(b):
            out["perplexity_ratio"] = stats.paired(
                a, b, stats.ratio_of(corpus_perplexity), samples=samples, seed=seed
            ).as_dict()
        sa, sb = entry.get("style_scores"), prev.get("style_scores")
        style = entry.get("style") or {}
        if sa and sb and "not_measured" not in style:
            out["style_difference"] = stats.paired(
                sa, sb, stats.mean_difference, samples=samples, seed=seed
            ).as_dict()
        entry["paired"] = out


def _notes(classifier: Any, req: dict[str, Any], spec: Any, cut: int, controls: bool) -> list[str]:
    notes = []
    if classifier is not None:
        d = classifier.describe()
        style = req["style"]
        notes.append(
            "style: P(author) of a classifier trained on the SFT run's training essays vs "
            + (
                "the file " + style["other_essays"]
                if style.get("other_essays")
                else "the database's candidate essays (not the evaluated trained models' own)"
            )
            + f" ({d['other_chunks']} chunks) and degenerate texts ({d['degenerate_chunks']} "
            "chunks: the author's words shuffled, random tokens); held out by cross-validation "
            f"it tells the author from the other writers with balanced accuracy "
            f"{_fmt(classifier.cv_accuracy)} and AUC {_fmt(classifier.cv_auc)}. It is not the "
            "datagen judge's classifier."
        )
        if "not_measured" in d:
            notes.append(f"style not measured: {d['not_measured']}.")
    if req["perplexity"]:
        notes.append(
            "perplexity: completion tokens only, in the SFT run's own conversations (its system "
            "prompt, templates and parts; long essays split as in training, never truncated); "
            "lower is closer."
        )
    notes.append(
        f"real held-out essays are cut to {cut} words (the generations' mean length) for "
        "distinct-n, repetition, style and fluency."
    )
    if controls:
        notes.append(
            "controls: 'random weights' is the first model's architecture freshly initialised; "
            "'shuffled words' is the cut real essays with their words shuffled. A sound score "
            "ranks both last."
        )
    return notes


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
    from chatpgt.providers.types import LocalOptions

    samples, seed = int(req["bootstrap_samples"]), int(req["seed"])
    async with ProviderPool(
        settings.provider_configs(), local_options=LocalOptions.from_settings(settings)
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
