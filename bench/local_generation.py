"""The local provider's generation speed next to a bare batched ``model.generate``, in one run.

Both write ``--prompts`` essays of at most ``--tokens`` new tokens with the same model, sampling
settings, seed and batch size, on the same threads, and count the tokens each essay really has
(up to and including its end-of-text token, as the provider counts them):

- **floor**: the prompts rendered with the chat template, left-padded in batches of
  ``--batch``, one ``model.generate`` call per batch (no provider, no event loop);
- **provider**: ``--prompts`` concurrent ``ChatRequest``s to a ``LocalProvider`` (its batching
  queue, worker thread and accounting), ``max_batch_size = --batch``.

Prints tokens/s of each and the ratio (the target in issue 18: ≥ 0.8). The floor runs first and
last and the provider between them, so a drift of the machine's load shows as a difference of
the two floor figures.

    python bench/local_generation.py                          # SmolLM2-135M, 16 x 64 tokens
    python bench/local_generation.py --prompts 32 --tokens 128 --batch 8 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f'Write an essay titled "Lesson {i} of starting up".'}]
        for i in range(n)
    ]


def floor(path: Path, args: argparse.Namespace) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    texts = [
        tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
        for m in prompts(args.prompts)
    ]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    tokens = 0
    for start in range(0, len(texts), args.batch):
        enc = tokenizer(
            texts[start : start + args.batch],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                max_new_tokens=args.tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            stop = next((k for k, t in enumerate(row) if t == tokenizer.eos_token_id), None)
            tokens += len(row) if stop is None else stop + 1
    return tokens / (time.perf_counter() - t0)


async def provider(path: Path, args: argparse.Namespace) -> float:
    from chatpgt.providers.local import LocalProvider
    from chatpgt.providers.types import ChatRequest, LocalOptions

    local = LocalProvider(
        "local",
        LocalOptions(max_batch_size=args.batch, batch_wait_ms=20, torch_threads=args.threads),
    )
    try:
        warm = ChatRequest("local", str(path), prompts(1)[0], max_tokens=1)
        await local.chat(warm)  # load the model outside the timing, as the floor's load is
        reqs = [
            ChatRequest(
                "local",
                str(path),
                m,
                temperature=0.8,
                top_p=0.95,
                max_tokens=args.tokens,
            )
            for m in prompts(args.prompts)
        ]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(local.chat(r) for r in reqs))
        elapsed = time.perf_counter() - t0
        return sum(r.completion_tokens for r in results) / elapsed
    finally:
        await local.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: SmolLM2-135M)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.model:
        path = Path(args.model)
    else:
        from chatpgt.providers.smollm2 import ensure_smollm2

        path = ensure_smollm2(ROOT / "var" / "demo" / "models")
    figures: dict[str, Any] = {"load_avg_before": round(os.getloadavg()[0], 1)}
    figures["floor_1"] = floor(path, args)
    figures["provider"] = asyncio.run(provider(path, args))
    figures["floor_2"] = floor(path, args)
    figures["load_avg_after"] = round(os.getloadavg()[0], 1)
    floor_mean = (figures["floor_1"] + figures["floor_2"]) / 2
    print(
        f"{path.name}: {args.prompts} prompts x {args.tokens} new tokens, batch {args.batch}, "
        f"{args.threads} thread(s), load {figures['load_avg_before']} -> "
        f"{figures['load_avg_after']}"
    )
    print(f"  bare batched generate: {figures['floor_1']:.1f} then {figures['floor_2']:.1f} tok/s")
    print(f"  local provider:        {figures['provider']:.1f} tok/s")
    print(f"  provider / floor:      {figures['provider'] / floor_mean:.2f}")


if __name__ == "__main__":
    main()
