"""SFT and DPO on TRL. Worker only: imports torch, transformers, TRL, datasets and peft.

Both recipes keep everything a resumed attempt needs in the run directory:
``data/`` (the exact examples, written once), ``checkpoint-N/`` (every ``save_steps``),
``runs/`` (TensorBoard), ``model/`` (the final model, loadable with
``transformers.pipeline("text-generation", model=...)``, chat template included).

Precision: bf16 on a CUDA GPU that supports it, fp32 otherwise (CPU). Flash attention,
padding-free SFT batches, Liger kernels and activation checkpointing are chosen per device and
model by :mod:`chatpgt.training.throughput` (checkpointing only where memory needs it).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.integrations import is_tensorboard_available
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from chatpgt.datagen.prompts import generation_messages
from chatpgt.training import corpus, throughput
from chatpgt.training.callbacks import NOT_EVAL_METRICS, RunProgressCallback
from chatpgt.training.checkpoints import last_checkpoint
from chatpgt.training.errors import TrainingDataError
from chatpgt.training.export import export_pairs, filters_from_request
from chatpgt.training.outcome import ADAPTER_DIR, Outcome
from chatpgt.training.reporting import Reporter
from chatpgt.training.repository import RunSnapshot
from chatpgt.training.schemas import (
    DPORequest,
    LoraSpec,
    SampleSpec,
    SFTRequest,
    TrainingKnobs,
    as_submitted,
)
from chatpgt.training.sft_loss import CrossEntropySFTTrainer

log = logging.getLogger(__name__)

# Used only when a base model's tokenizer has no chat template: a plain ChatML template, so the
# trained model still renders conversations (and pipeline() accepts messages).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class Device:
    cuda: bool
    bf16: bool

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float32

    @classmethod
    def detect(cls) -> Device:
        cuda = torch.cuda.is_available()
        return cls(cuda=cuda, bf16=cuda and torch.cuda.is_bf16_supported())


def run(
    snapshot: RunSnapshot,
    run_dir: Path,
    reporter: Reporter,
    database_url: str,
    callbacks: Sequence[Any] = (),
) -> Outcome:
    """Train the run described by ``snapshot`` in ``run_dir``; resumes from its last checkpoint.
    ``callbacks`` are added to the Trainer's after the run's progress callback."""
    prepare_data(snapshot, run_dir, reporter, database_url)
    if snapshot.kind == "sft":
        return run_sft(snapshot, run_dir, reporter, callbacks)
    return run_dpo(snapshot, run_dir, reporter, callbacks)


def prepare_data(
    snapshot: RunSnapshot, run_dir: Path, reporter: Reporter, database_url: str
) -> None:
    """Write the run's ``data/`` once: the SFT examples and their report, or the DPO pairs. A
    later attempt (or the ranks of a multi-process run, which the worker prepares for before
    launching them) finds them there and trains on exactly the same data."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = run_dir / "data"
    data.mkdir(exist_ok=True)
    if snapshot.kind == "sft":
        report_path = data / "report.json"
        if not report_path.exists():
            request = SFTRequest.model_validate(snapshot.request)
            tokenizer, notes = load_tokenizer(snapshot.start_model["path"])
            report = _prepare_sft_data(request, tokenizer, data, run_dir)
            report.update(notes)
            report_path.write_text(json.dumps(report))
    elif snapshot.kind == "dpo":
        pairs_path = data / "pairs.jsonl"
        if not pairs_path.exists():
            request_dpo = DPORequest.model_validate(as_submitted(snapshot.request))
            exported = export_pairs(
                database_url, filters_from_request(request_dpo.pairs.model_dump()), pairs_path
            )
            # The lineage's held-out essays stay out of DPO (chatpgt.evaluation.heldout).
            excluded = exclude_topics(pairs_path, snapshot.request.get("heldout_topics") or [])
            counts = {"pairs_exported": exported - excluded, "pairs_excluded_heldout": excluded}
            reporter.report(data_report=counts, force=True)
    else:
        raise TrainingDataError(f"unknown training kind {snapshot.kind!r}")


# --------------------------------------------------------------------------------------------
# SFT


def run_sft(
    snapshot: RunSnapshot, run_dir: Path, reporter: Reporter, callbacks: Sequence[Any] = ()
) -> Outcome:
    request = SFTRequest.model_validate(snapshot.request)
    hp = request.hyperparameters
    device = Device.detect()
    model_path = snapshot.start_model["path"]
    tokenizer, _ = load_tokenizer(model_path)

    data = run_dir / "data"
    report = json.loads((data / "report.json").read_text())
    split = report.pop("split", None)
    reporter.report(data_report=report, force=True)
    if split is not None:  # the held-out essays of every evaluation of this lineage
        reporter.report(essay_split=split, force=True)
    if reporter.should_stop:
        return _stopped(reporter, run_dir, {})

    train = _load_jsonl(data / "train.jsonl", run_dir)
    evals = _load_jsonl(data / "eval.jsonl", run_dir) if report["examples"]["eval"] else None
    model = load_model(model_path, device)
    features = choose_features(model, hp, device, kind="sft")
    reporter.report(data_report={"throughput": features.as_dict()}, force=True)
    args = SFTConfig(
        **_common_args(hp, run_dir, device, features, has_eval=evals is not None),
        max_length=hp.max_length,
        completion_only_loss=True,  # loss on the essay (assistant turn), not on the prompt
        packing=False,  # essays are split to fit max_length; packing would join unrelated ones
        padding_free=features.padding_free,
    )
    progress = RunProgressCallback(
        reporter, snapshot.metrics.get("latest"), lean_final_save=hp.distributed != "fsdp"
    )
    # On CPU the model's own cross-entropy: TRL's fused lm-head loss is its slowest part there.
    trainer_class = SFTTrainer if features.fused_lm_head_loss else CrossEntropySFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        processing_class=tokenizer,
        peft_config=_lora_config(hp.lora),
        callbacks=[progress, *callbacks],
    )
    truncated = _count_truncated_sft(trainer)
    used: Any = trainer.train_dataset
    dropped = len(train) - (len(used) if used is not None else 0)
    if truncated or dropped:
        log.warning(
            "training run %s: TRL truncated %s and dropped %s examples",
            snapshot.id,
            truncated,
            dropped,
        )
        reporter.report(data_report={"truncated": truncated, "dropped": dropped}, force=True)
    return _train_and_save(trainer, tokenizer, run_dir, reporter, request.samples, hp, progress)


def _prepare_sft_data(
    request: SFTRequest, tokenizer: PreTrainedTokenizerBase, data: Path, run_dir: Path
) -> dict[str, Any]:
    hp = request.hyperparameters
    essays = corpus.load_essays(request.corpus, cache_dir=str(run_dir / "cache"))
    if not essays:
        raise TrainingDataError(f"the corpus {request.corpus!r} holds no essays")
    train_essays, eval_essays = corpus.split_train_eval(essays, hp.eval_fraction, hp.split_seed)
    measure, count = token_counters(tokenizer, request.prompts.system_prompt)
    split = corpus.SplitReport()

    def examples(essays: list[corpus.Essay]) -> list[dict[str, Any]]:
        return corpus.build_examples(
            essays,
            measure=measure,
            count=count,
            max_length=hp.max_length,
            templates=request.prompts.templates,
            system_prompt=request.prompts.system_prompt,
            continuation_template=request.prompts.continuation_template,
            context_words=request.prompts.continuation_context_words,
            seed=hp.split_seed,
            report=split,
        )

    index = {id(essay): i for i, essay in enumerate(essays)}
    split_record = {
        "corpus": request.corpus,
        "seed": hp.split_seed,
        "eval_fraction": hp.eval_fraction,
        "essays": len(essays),
        "train": [{"index": index[id(e)], "title": e.title} for e in train_essays],
        "eval": [{"index": index[id(e)], "title": e.title} for e in eval_essays],
    }
    train_rows = examples(train_essays)
    eval_rows = examples(eval_essays)
    if not train_rows:
        raise TrainingDataError(f"the corpus {request.corpus!r} gave no training examples")
    corpus.write_jsonl(train_rows, data / "train.jsonl")
    corpus.write_jsonl(eval_rows, data / "eval.jsonl")
    return {
        "corpus": request.corpus,
        "essays": {"train": len(train_essays), "eval": len(eval_essays)},
        "examples": {"train": len(train_rows), "eval": len(eval_rows)},
        "long_essays": split.as_dict(),
        "truncated": 0,
        "split": split_record,
    }


def token_counters(
    tokenizer: PreTrainedTokenizerBase, system_prompt: str | None = None
) -> tuple[corpus.MeasureFn, corpus.CountFn]:
    """``measure(prompt, completion)``: tokens of the rendered conversation (the generation
    messages with ``system_prompt``, then the completion), as TRL tokenizes it;
    ``count(text)``: tokens of a bare text."""

    def measure(prompt: str, completion: str) -> int:
        messages = [
            *generation_messages(prompt, system_prompt),
            {"role": "assistant", "content": completion},
        ]
        encoded: Any = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return len(encoded["input_ids"])

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return measure, count


def _count_truncated_sft(trainer: SFTTrainer) -> int:
    """Examples TRL cut at max_length or dropped: zero by construction, counted to prove it."""
    dataset: Any = trainer.train_dataset
    if dataset is None or not {"tokens", "input_ids"} <= set(dataset.column_names):
        return 0
    return sum(
        1 for ids, n in zip(dataset["input_ids"], dataset["tokens"], strict=True) if len(ids) < n
    )


# --------------------------------------------------------------------------------------------
# DPO


def run_dpo(
    snapshot: RunSnapshot, run_dir: Path, reporter: Reporter, callbacks: Sequence[Any] = ()
) -> Outcome:
    request = DPORequest.model_validate(as_submitted(snapshot.request))
    hp = request.hyperparameters
    device = Device.detect()
    model_path = snapshot.start_model["path"]

    pairs = _load_jsonl(run_dir / "data" / "pairs.jsonl", run_dir)
    if len(pairs) == 0:
        raise TrainingDataError("no pair matches the selection any more (pairs were deleted?)")
    n_eval = math.floor(len(pairs) * hp.eval_fraction)
    if 0 < n_eval < len(pairs):
        split = pairs.train_test_split(test_size=n_eval, seed=hp.split_seed, shuffle=True)
        train, evals = split["train"], split["test"]
    else:
        train, evals = pairs, None
    # A run with max_steps sees at most max_steps global batches of pairs: keep a random subset
    # of that many, so that the reference log-probs (a forward pass over every pair, before the
    # first step) are computed only for pairs the run trains on.
    batch = hp.per_device_batch_size * hp.gradient_accumulation_steps * (hp.num_processes or 1)
    seen = (hp.max_steps or 0) * batch
    not_seen = 0
    if hp.max_steps and len(train) > seen:
        not_seen = len(train) - seen
        train = train.shuffle(seed=hp.split_seed).select(range(seen))
    if reporter.should_stop:
        return _stopped(reporter, run_dir, {})

    tokenizer, notes = load_tokenizer(model_path)
    model = load_model(model_path, device)
    features = choose_features(model, hp, device, kind="dpo")
    lora = _lora_config(hp.lora)
    precompute = hp.precompute_ref_log_probs
    if precompute is None:
        precompute = lora is None
    ref_model = None
    if lora is None and not precompute:
        # Asked for explicitly: the classic setup with a second full copy as the reference.
        ref_model = load_model(model_path, device)
    if precompute:  # DPOTrainer computes them while it is built: say so, it takes a while
        reporter.report(progress={"stage": "reference log-probs", "pairs": len(train)}, force=True)
    progress = RunProgressCallback(
        reporter, snapshot.metrics.get("latest"), lean_final_save=hp.distributed != "fsdp"
    )
    args = DPOConfig(
        **_common_args(hp, run_dir, device, features, has_eval=evals is not None),
        max_length=hp.max_length,
        beta=hp.beta,
        loss_type=[hp.loss_type],
        precompute_ref_log_probs=precompute,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[progress, *callbacks],
    )
    used: Any = trainer.train_dataset
    assert used is not None
    lengths = [
        len(p) + max(len(c), len(r))
        for p, c, r in zip(
            used["prompt_ids"], used["chosen_ids"], used["rejected_ids"], strict=True
        )
    ]
    reporter.report(
        data_report={
            "pairs_exported": len(pairs),
            "examples": {"train": len(used), "eval": len(evals) if evals is not None else 0},
            "pairs_dropped_prompt_too_long": len(train) - len(used),
            "pairs_beyond_max_steps": not_seen,
            "pairs_truncated": sum(1 for n in lengths if n > hp.max_length),
            "longest_pair_tokens": max(lengths, default=0),
            "max_length": hp.max_length,
            "reference": "adapter disabled (LoRA)"
            if lora is not None and not precompute
            else "precomputed log-probs"
            if precompute
            else "separate model copy",
            "throughput": features.as_dict(),
            **notes,
        },
        force=True,
    )
    return _train_and_save(trainer, tokenizer, run_dir, reporter, request.samples, hp, progress)


def exclude_topics(path: Path, topics: list[str]) -> int:
    """Drop the exported pairs whose topic is one of ``topics`` (the lineage's held-out essays,
    kept out of DPO so that evaluating on them stays fair); returns how many were dropped."""
    if not topics:
        return 0
    held = set(topics)
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and json.loads(line).get("topic") in held:
            dropped += 1
        elif line.strip():
            kept.append(json.loads(line))
    if dropped:
        corpus.write_jsonl(kept, path)
    return dropped


# --------------------------------------------------------------------------------------------
# Shared


def load_tokenizer(path: str) -> tuple[PreTrainedTokenizerBase, dict[str, Any]]:
    """The model's tokenizer with a pad token and a chat template (ChatML when it had none)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise TrainingDataError(f"cannot load the tokenizer of model {path!r}: {exc}") from exc
    notes: dict[str, Any] = {}
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
        notes["chat_template_added"] = "chatml"
    return tokenizer, notes


def load_model(path: str, device: Device) -> PreTrainedModel:
    """The model in the device's dtype; with flash attention where it is installed (CUDA, bf16)."""
    kwargs: dict[str, Any] = {}
    if device.cuda and device.bf16 and throughput.installed("flash_attn"):
        kwargs["attn_implementation"] = "flash_attention_2"
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=device.dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainingDataError(f"cannot load model {path!r}: {exc}") from exc


def choose_features(
    model: PreTrainedModel, hp: TrainingKnobs, device: Device, *, kind: str
) -> throughput.Features:
    """Flash attention, padding-free SFT, Liger and activation checkpointing for this device
    and model (:mod:`chatpgt.training.throughput`)."""
    config: Any = model.config
    shape = throughput.ModelShape(
        params=model.num_parameters(),
        layers=int(getattr(config, "num_hidden_layers", 1)),
        hidden=int(getattr(config, "hidden_size", 1)),
        vocab=int(getattr(config, "vocab_size", 1)),
    )
    memory = torch.cuda.get_device_properties(0).total_memory if device.cuda else None
    fsdp = hp.distributed == "fsdp"
    return throughput.choose(
        kind=kind,
        cuda=device.cuda,
        bf16=device.bf16,
        shape=shape,
        tokens_per_device=hp.per_device_batch_size * hp.max_length * (2 if kind == "dpo" else 1),
        device_memory_bytes=memory,
        shards=(hp.num_processes or 1) if fsdp else 1,
        lora=hp.lora is not None,
        requested_checkpointing=hp.gradient_checkpointing,
    )


def _common_args(
    hp: TrainingKnobs,
    run_dir: Path,
    device: Device,
    features: throughput.Features,
    *,
    has_eval: bool,
) -> dict[str, Any]:
    # Under FSDP, accelerate checkpoints activations itself (fsdp_activation_checkpointing).
    checkpointing = features.activation_checkpointing and hp.distributed != "fsdp"
    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if hp.eval_steps else "epoch"
    return {
        "output_dir": str(run_dir),
        "num_train_epochs": hp.epochs,
        "max_steps": hp.max_steps or -1,
        "per_device_train_batch_size": hp.per_device_batch_size,
        "per_device_eval_batch_size": hp.per_device_batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "learning_rate": hp.learning_rate,
        "lr_scheduler_type": hp.lr_scheduler,
        "warmup_steps": hp.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": hp.weight_decay,
        "logging_steps": hp.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": hp.save_steps,
        "save_total_limit": hp.save_total_limit,
        "eval_strategy": eval_strategy,
        "eval_steps": hp.eval_steps,
        "report_to": ["tensorboard"] if is_tensorboard_available() else "none",
        "seed": hp.seed,
        "bf16": device.bf16,
        "fp16": False,
        "activation_checkpointing": checkpointing,
        "use_liger_kernel": features.use_liger_kernel,
        "use_cpu": not device.cuda,
        "dataloader_pin_memory": device.cuda,
        "disable_tqdm": True,
        # Counts the tokens trained on (state.num_input_tokens_seen), for tokens/s.
        "include_num_input_tokens_seen": "non_padding",
    }


def _lora_config(spec: LoraSpec | None) -> Any:
    if spec is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )


def _load_jsonl(path: Path, run_dir: Path) -> Dataset:
    if path.stat().st_size == 0:
        return Dataset.from_list([])
    return Dataset.from_json(str(path), cache_dir=str(run_dir / "cache"))


def _stopped(reporter: Reporter, run_dir: Path, final: dict[str, Any]) -> Outcome:
    if reporter.lost.is_set():
        return Outcome("lost")
    return Outcome(
        "cancelled", final_metrics=final, artifacts={"last_checkpoint": last_checkpoint(run_dir)}
    )


def _train_and_save(
    trainer: SFTTrainer | DPOTrainer,
    tokenizer: PreTrainedTokenizerBase,
    run_dir: Path,
    reporter: Reporter,
    samples: SampleSpec,
    hp: TrainingKnobs,
    progress: RunProgressCallback,
) -> Outcome:
    resume = last_checkpoint(run_dir)
    if resume:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    final: dict[str, Any] = {
        "train_loss": _finite(result.training_loss),
        "global_step": result.global_step,
        "train_runtime_s": _finite(result.metrics.get("train_runtime")),
    }
    final.update(_last_train_log(trainer))
    final.update(progress.throughput(trainer.state))
    if reporter.should_stop:
        return _stopped(reporter, run_dir, final)
    if trainer.eval_dataset is not None:
        final.update(final_evaluation(trainer))
    model_dir = run_dir / "model"
    model = save_final_model(trainer, tokenizer, model_dir, samples, merge=_merge(hp))
    # With several processes rank 0 alone samples (the others have nothing more to do); under
    # FSDP its model is a shard, so it samples from the saved full model.
    generated: list[dict[str, str]] = []
    accelerator = trainer.accelerator
    if accelerator.is_main_process:
        if accelerator.is_fsdp2:
            model = load_model(str(model_dir), Device.detect()).to(accelerator.device)
        generated = generate_samples(model, tokenizer, samples, seed=hp.seed)
    return Outcome(
        "succeeded",
        final_metrics={k: v for k, v in final.items() if v is not None},
        samples=generated,
        artifacts={
            "model_dir": str(model_dir),
            "last_checkpoint": last_checkpoint(run_dir),
            **(
                {"adapter_dir": str(run_dir / ADAPTER_DIR)}
                if (run_dir / ADAPTER_DIR).is_dir()
                else {}
            ),
        },
    )


def _merge(hp: TrainingKnobs) -> bool:
    return hp.lora is None or hp.lora.merge


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def final_evaluation(trainer: SFTTrainer | DPOTrainer) -> dict[str, float]:
    """The held-out metrics of the final model: those the Trainer logged when it evaluated at the
    final step (its ``eval_strategy``, per epoch or per N steps, evaluates there), else one
    evaluation now. Never two identical passes over the held-out set."""
    step = trainer.state.global_step
    logged = next((e for e in reversed(trainer.state.log_history) if "eval_loss" in e), None)
    if logged is not None and logged.get("step") == step:
        metrics = dict(logged)
    else:
        metrics = trainer.evaluate()
    return {
        k: float(v)
        for k, v in metrics.items()
        if (k.startswith("eval_") or k == "epoch")
        and k not in NOT_EVAL_METRICS
        and _finite(v) is not None
    }


def _last_train_log(trainer: SFTTrainer | DPOTrainer) -> dict[str, float]:
    """The last logged training values (loss, DPO rewards/*, logps/*, token accuracy)."""
    keep = ("rewards/", "logps/", "mean_token_accuracy")
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            return {
                k: float(v)
                for k, v in entry.items()
                if (k == "loss" or k.startswith(keep)) and _finite(v) is not None
            }
    return {}


def save_final_model(
    trainer: SFTTrainer | DPOTrainer,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: Path,
    samples: SampleSpec,
    *,
    merge: bool,
) -> PreTrainedModel:
    """Write the model (LoRA merged into full weights by default, the adapter itself kept in
    ``<run dir>/adapter``) and its tokenizer with the chat template; sampling defaults
    (temperature, top_p) go into its generation config. With several processes every rank
    calls this (FSDP gathers the full weights from all of them) and rank 0 alone writes."""
    accelerator = trainer.accelerator
    state_dict = accelerator.get_state_dict(trainer.model) if accelerator.is_fsdp2 else None
    model = accelerator.unwrap_model(trainer.model)
    if not accelerator.is_main_process:
        return model
    if merge and hasattr(model, "merge_and_unload"):
        # The adapter is kept beside the merged model (small: only the LoRA weights), for a
        # user who ships the adapter instead (``chatpgt models push --adapter``).
        adapter_dir = model_dir.parent / ADAPTER_DIR
        model.save_pretrained(str(adapter_dir), state_dict=state_dict)
        tokenizer.save_pretrained(str(adapter_dir))
        model = model.merge_and_unload()
    config = model.generation_config
    if config is not None:
        config.do_sample = True
        config.temperature = samples.temperature
        config.top_p = samples.top_p
        config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(model_dir), state_dict=state_dict)
    tokenizer.save_pretrained(str(model_dir))
    return model


def generate_samples(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    spec: SampleSpec,
    *,
    seed: int,
    batch_size: int = 8,
) -> list[dict[str, str]]:
    """One sampled essay per prompt (temperature and top_p from ``spec``), ``batch_size``
    prompts per ``generate`` call (left-padded): on a CPU a batch of 8 writes several times the
    tokens per second of one prompt at a time."""
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens follow each prompt's last token
    out = []
    try:
        for start in range(0, len(spec.prompts), batch_size):
            prompts = spec.prompts[start : start + batch_size]
            texts = [
                tokenizer.apply_chat_template(
                    generation_messages(p, spec.system_prompt),
                    add_generation_prompt=True,
                    tokenize=False,
                )
                for p in prompts
            ]
            encoded: Any = tokenizer(
                texts, return_tensors="pt", padding=True, add_special_tokens=False
            )
            inputs = {k: v.to(device) for k, v in encoded.items()}
            with torch.no_grad():
                ids = model.generate(
                    **inputs,
                    do_sample=True,
                    temperature=spec.temperature,
                    top_p=spec.top_p,
                    max_new_tokens=spec.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = ids[:, inputs["input_ids"].shape[1] :]
            for prompt, row in zip(prompts, new, strict=True):
                text = str(tokenizer.decode(row, skip_special_tokens=True))
                out.append({"prompt": prompt, "text": text})
    finally:
        tokenizer.padding_side = side
    return out
