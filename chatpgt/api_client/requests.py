"""Request bodies of the ChatPGT API built from loose values (a command line's options).

Each builder sets only the values it was given, so the server's defaults stay the only defaults,
and validates the body against the schema the API declares. A combination that cannot make a
valid request raises :class:`InvalidRequest`, whose ``str()`` is one line (the CLI shows it as a
usage error, exit code 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from chatpgt.datagen.pairing import PairingRule
from chatpgt.datagen.schemas import DatagenJobCreate
from chatpgt.datasets.schemas import DedupRequest, PairImport
from chatpgt.rounds.schemas import RoundsRequest
from chatpgt.topics.schemas import FileImport, HFImport
from chatpgt.training.schemas import DPORequest, SFTRequest

# How many validation errors are named in an InvalidRequest's message.
SHOWN_ERRORS = 3


class InvalidRequest(ValueError):
    """Values that do not make a valid request; ``str()`` is one line."""


def validation_message(exc: ValidationError) -> str:
    """Pydantic errors as one line: ``field.path: message; ...``."""
    parts = []
    for error in exc.errors()[:SHOWN_ERRORS]:
        loc = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    more = exc.error_count() - SHOWN_ERRORS
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _invalid(exc: ValidationError) -> InvalidRequest:
    return InvalidRequest(validation_message(exc))


SchemaT = TypeVar("SchemaT", bound=BaseModel)


def _validated(schema: type[SchemaT], body: dict[str, Any]) -> SchemaT:
    """``body`` as ``schema``; InvalidRequest (one line) when it does not fit."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _given(**values: Any) -> dict[str, Any]:
    """The values that were given (not None)."""
    return {key: value for key, value in values.items() if value is not None}


# -- topics -------------------------------------------------------------------------------------


def build_import_request(
    *,
    path: str | None,
    hf: str | None,
    split: str | None = None,
    config: str | None = None,
    column: str | None = None,
    text_column: str | None = None,
    as_corpus: bool = False,
    file_format: Literal["txt", "csv"] | None = None,
    limit: int | None = None,
) -> FileImport | HFImport:
    """The ``POST /topics/import`` body for a file ``path`` or a dataset ``hf`` (exactly one).

    A path that exists here is sent absolute: the API process reads it, and when it runs on this
    machine it resolves paths against its own working directory."""
    if (path is None) == (hf is None):
        raise InvalidRequest("give a file PATH or --hf DATASET (one of them)")
    common: dict[str, Any] = {"as_corpus": as_corpus}
    for key, value in (("column", column), ("text_column", text_column), ("limit", limit)):
        if value is not None:
            common[key] = value
    try:
        if hf is not None:
            if file_format is not None:
                raise InvalidRequest("--format is for files; a dataset's format is known")
            body = {"source": "hf", "dataset": hf, **common}
            if split is not None:
                body["split"] = split
            if config is not None:
                body["config"] = config
            return HFImport.model_validate(body)
        assert path is not None
        if split is not None or config is not None:
            raise InvalidRequest("--split and --config are for --hf datasets")
        local = Path(path).expanduser()
        sent = str(local.resolve()) if local.exists() else path
        body = {"source": "file", "path": sent, **common}
        if file_format is not None:
            body["format"] = file_format
        return FileImport.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


# -- datagen ------------------------------------------------------------------------------------


def parse_generator(spec: str) -> dict[str, Any]:
    """``provider:model[:samples[:temperature]]`` as a generator body. A model name may hold
    colons (``openrouter:org/model:free``); trailing numbers are read as samples, then
    temperature."""
    provider, sep, rest = spec.partition(":")
    if not sep or not provider or not rest:
        raise InvalidRequest(f"{spec!r} is not provider:model[:samples[:temperature]]")
    parts = rest.split(":")
    numbers: list[str] = []
    while len(parts) > 1 and len(numbers) < 2 and _is_number(parts[-1]):
        numbers.insert(0, parts.pop())
    body: dict[str, Any] = {"provider": provider, "model": ":".join(parts)}
    if numbers:
        if not numbers[0].isdigit():
            raise InvalidRequest(f"{spec!r}: samples must be a whole number, got {numbers[0]!r}")
        body["samples_per_topic"] = int(numbers[0])
    if len(numbers) == 2:
        body["temperature"] = float(numbers[1])
    return body


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.replace(".", "", 1).isdigit()


def parse_judge(spec: str) -> dict[str, Any]:
    """``provider:model`` as a judge body (the model name may hold colons), or the name of a
    method that asks no provider (``style_classifier``)."""
    from chatpgt.datagen.judges import method_names, needs_provider

    if spec in method_names() and not needs_provider(spec):
        return {"method": spec}
    provider, sep, model = spec.partition(":")
    if not sep or not provider or not model:
        raise InvalidRequest(f"{spec!r} is not provider:model")
    return {"provider": provider, "model": model}


def build_job_request(
    *,
    titles: Sequence[str] = (),
    topic_ids: Sequence[int] = (),
    sample: int | None = None,
    seed: int | None = None,
    generators: Sequence[str],
    judge: str,
    pairing: PairingRule | None = None,
    budget_usd: float | None = None,
    max_tokens: int | None = None,
    corpus_pairs: bool = False,
    dedup_threshold: float | None = None,
    batch: bool = False,
    cache: bool = True,
) -> DatagenJobCreate:
    """The ``POST /datagen/jobs`` body from command-line values. ``batch``: every generator and
    the judge (one that asks a provider) through the provider's Batch API."""
    chosen = [name for name, given in (("titles", titles), ("ids", topic_ids)) if given]
    if sample is not None:
        chosen.append("sample")
    if len(chosen) != 1:
        raise InvalidRequest(
            "choose topics one way: --topic/--topics-file, --topic-id, or --sample N"
        )
    if seed is not None and sample is None:
        raise InvalidRequest("--seed goes with --sample")
    topics: dict[str, Any] = {"titles": list(titles)} if titles else {}
    if topic_ids:
        topics = {"ids": list(topic_ids)}
    if sample is not None:
        topics = {"sample": sample} | ({"seed": seed} if seed is not None else {})
    generator_bodies = [parse_generator(spec) for spec in generators]
    judge_body = parse_judge(judge)
    if max_tokens is not None:
        for body in generator_bodies:
            body["max_tokens"] = max_tokens
    if batch:
        for body in generator_bodies:
            body["mode"] = "batch"
        if "provider" in judge_body:
            judge_body["mode"] = "batch"
    request: dict[str, Any] = {
        "topics": topics,
        "generators": generator_bodies,
        "judge": judge_body,
    }
    if pairing is not None:
        request["pairing"] = pairing.value
    if budget_usd is not None:
        request["budget_usd"] = budget_usd
    if corpus_pairs:
        request["include_corpus_pairs"] = True
    if dedup_threshold is not None:
        request["dedup"] = {"threshold": dedup_threshold}
    if not cache:
        request["cache"] = False
    return _validated(DatagenJobCreate, request)


# -- training -----------------------------------------------------------------------------------


@dataclass
class TrainingOptions:
    """Values of the settings common to SFT and DPO; None means "server default"."""

    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    learning_rate: float | None = None
    lr_scheduler: str | None = None
    warmup_ratio: float | None = None
    max_length: int | None = None
    max_steps: int | None = None
    eval_fraction: float | None = None
    seed: int | None = None
    save_steps: int | None = None
    logging_steps: int | None = None
    lora: bool = False
    lora_r: int | None = None
    lora_alpha: int | None = None

    def hyperparameters(self) -> dict[str, Any]:
        """The ``hyperparameters`` object with the values that were given."""
        names = {
            "epochs": self.epochs,
            "per_device_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "learning_rate": self.learning_rate,
            "lr_scheduler": self.lr_scheduler,
            "warmup_ratio": self.warmup_ratio,
            "max_length": self.max_length,
            "max_steps": self.max_steps,
            "eval_fraction": self.eval_fraction,
            "seed": self.seed,
            "save_steps": self.save_steps,
            "logging_steps": self.logging_steps,
        }
        body: dict[str, Any] = {key: value for key, value in names.items() if value is not None}
        lora = {
            key: value
            for key, value in (("r", self.lora_r), ("alpha", self.lora_alpha))
            if value is not None
        }
        if self.lora or lora:
            body["lora"] = lora
        return body


def _samples_body(
    prompts: Sequence[str] | None, no_samples: bool, max_new_tokens: int | None
) -> dict[str, Any] | None:
    if no_samples and prompts:
        raise InvalidRequest("--no-samples and --sample-prompt contradict each other")
    body: dict[str, Any] = {}
    if no_samples:
        body["prompts"] = []
    elif prompts:
        body["prompts"] = list(prompts)
    if max_new_tokens is not None:
        body["max_new_tokens"] = max_new_tokens
    return body or None


def _training_body(
    body: dict[str, Any],
    hyper: dict[str, Any],
    sample_prompts: Sequence[str] | None,
    no_samples: bool,
    max_new_tokens: int | None,
) -> dict[str, Any]:
    if hyper:
        body["hyperparameters"] = hyper
    samples = _samples_body(sample_prompts, no_samples, max_new_tokens)
    if samples is not None:
        body["samples"] = samples
    return body


def build_sft_request(
    *,
    base_model: str | None = None,
    corpus: str | None = None,
    name: str | None = None,
    options: TrainingOptions | None = None,
    sample_prompts: Sequence[str] | None = None,
    no_samples: bool = False,
    max_new_tokens: int | None = None,
) -> SFTRequest:
    """The ``POST /train/sft`` body with only the given values set."""
    body = _given(base_model=base_model, corpus=corpus, name=name)
    hyper = (options or TrainingOptions()).hyperparameters()
    body = _training_body(body, hyper, sample_prompts, no_samples, max_new_tokens)
    return _validated(SFTRequest, body)


def build_dpo_request(
    *,
    model: str,
    min_confidence: float | None = None,
    job_ids: Sequence[int] = (),
    source: Literal["judged", "corpus"] | None = None,
    name: str | None = None,
    beta: float | None = None,
    loss_type: str | None = None,
    options: TrainingOptions | None = None,
    sample_prompts: Sequence[str] | None = None,
    no_samples: bool = False,
    max_new_tokens: int | None = None,
) -> DPORequest:
    """The ``POST /train/dpo`` body with only the given values set. ``model`` is a finished SFT
    run id, a registered model name, a directory or a hub id."""
    body: dict[str, Any] = {"model": model}
    pairs: dict[str, Any] = {}
    if min_confidence is not None:
        pairs["min_confidence"] = min_confidence
    if job_ids:
        pairs["job_ids"] = list(job_ids)
    if source is not None:
        pairs["source"] = source
    if pairs:
        body["pairs"] = pairs
    if name is not None:
        body["name"] = name
    hyper = (options or TrainingOptions()).hyperparameters()
    if beta is not None:
        hyper["beta"] = beta
    if loss_type is not None:
        hyper["loss_type"] = loss_type
    body = _training_body(body, hyper, sample_prompts, no_samples, max_new_tokens)
    return _validated(DPORequest, body)


# -- datasets -----------------------------------------------------------------------------------


def build_dedup_request(
    *, job_ids: Sequence[int] = (), threshold: float | None = None
) -> DedupRequest:
    """The ``POST /pairs/dedup`` body: the jobs to scan together (all when none)."""
    return _validated(DedupRequest, _given(job_ids=list(job_ids), threshold=threshold))


def build_pair_import(
    *,
    dataset: str,
    split: str | None = None,
    config: str | None = None,
    limit: int | None = None,
    confidence: float | None = None,
) -> PairImport:
    """The ``POST /pairs/import`` body with only the given values set."""
    body = _given(dataset=dataset, split=split, config=config, limit=limit, confidence=confidence)
    return _validated(PairImport, body)


# -- rounds -------------------------------------------------------------------------------------


def build_rounds_request(
    *,
    model: str,
    rounds: int,
    topics: Sequence[str],
    sample: int | None,
    judge: str,
    generators: Sequence[str],
    policy: dict[str, Any],
    name: str | None,
    accumulate: bool,
    budget_usd: float | None,
    min_confidence: float | None,
    dpo_max_steps: int | None,
    pairing: PairingRule | None,
    evaluation: dict[str, Any] | None = None,
) -> RoundsRequest:
    """``POST /train/rounds`` from the CLI's values; InvalidRequest when they make no valid
    request. ``evaluation``: see :func:`build_rounds_evaluation`."""
    if bool(topics) == (sample is not None):
        raise InvalidRequest("give topics (--topic, repeatable) or --sample N, not both")
    dpo: dict[str, Any] = {}
    if min_confidence is not None:
        dpo["min_confidence"] = min_confidence
    if dpo_max_steps is not None:
        dpo["hyperparameters"] = {"max_steps": dpo_max_steps}
    body: dict[str, Any] = {
        "model": model,
        "rounds": rounds,
        "topics": {"titles": list(topics)} if topics else {"sample": sample},
        "judge": parse_judge(judge),
        "generators": [parse_generator(g) for g in generators],
        "policy": {k: v for k, v in policy.items() if v is not None},
        "accumulate": accumulate,
        "dpo": dpo,
    }
    if name:
        body["name"] = name
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    if pairing is not None:
        body["pairing"] = pairing
    if evaluation is not None:
        body["evaluation"] = evaluation
    return _validated(RoundsRequest, body)


def parse_eval_judge(spec: str) -> dict[str, Any]:
    """``provider:model`` or ``provider:model:method`` (method json or ab_probability) as an
    evaluation judge body."""
    provider, sep, rest = spec.partition(":")
    if not sep or not provider or not rest:
        raise InvalidRequest(f"{spec!r} is not provider:model or provider:model:ab_probability")
    model, method = rest, "json"
    for m in ("ab_probability", "json"):
        if rest.endswith(":" + m):
            model, method = rest[: -len(m) - 1], m
    return {"provider": provider, "model": model, "method": method}


def build_rounds_evaluation(
    *,
    metric: str | None,
    patience: int | None = None,
    min_improvement: float | None = None,
    max_essays: int | None = None,
    judge: str | None = None,
    max_new_tokens: int | None = None,
    style: bool | None = None,
    perplexity: bool | None = None,
) -> dict[str, Any] | None:
    """A rounds request's ``evaluation`` from the CLI's ``--eval-*`` values; None without a
    metric (no evaluation), InvalidRequest when other ``--eval-*`` values come without one."""
    rest = _given(
        patience=patience,
        min_improvement=min_improvement,
        max_essays=max_essays,
        judge=judge,
        max_new_tokens=max_new_tokens,
        style=style,
        perplexity=perplexity,
    )
    if metric is None:
        if rest:
            names = ", ".join("--eval-" + k.replace("_", "-") for k in rest)
            raise InvalidRequest(f"{names}: give --eval-metric to evaluate each round")
        return None
    body: dict[str, Any] = {
        "metric": metric,
        **_given(patience=patience, min_improvement=min_improvement, max_essays=max_essays),
    }
    if judge is not None:
        body["judge"] = parse_eval_judge(judge)
    if max_new_tokens is not None:
        body["generation"] = {"max_new_tokens": max_new_tokens}
    if style is not None:
        body["style"] = {"enabled": style}
    if perplexity is not None:
        body["perplexity"] = perplexity
    return body
