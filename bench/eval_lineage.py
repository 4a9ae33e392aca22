"""Evaluation metrics on a real model and the real corpus, timed: base vs a short SFT.

Runs the library directly (no API, no worker): splits the corpus exactly as an SFT run does
(``eval_fraction`` 0.2, seed 42), takes the first ``--essays`` held-out essays, trains a copy of
the model for ``--sft-steps`` steps on the *training* essays' SFT examples (completion-only loss,
plain torch AdamW: a stand-in for a short TRL SFT), and measures for both models: held-out
perplexity (SFT's chat format and parts), generations on the held-out titles, the style score
(classifier: training essays vs the base model's own essays on training titles), descriptive
stats, each with its wall time. Prints a table and writes an HTML report.

    python bench/eval_lineage.py                       # bundled SmolLM2-135M-Instruct, 3 essays
    python bench/eval_lineage.py --model HuggingFaceTB/SmolLM3-3B --essays 20 --sft-steps 0

For the full service path (SFT and DPO runs, then POST /eval/runs) see docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

SHARED_CORPUS = "/work/shared/data/paul_graham_essays.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model dir or hub id (default: SmolLM2)")
    parser.add_argument("--corpus", default=SHARED_CORPUS)
    parser.add_argument("--essays", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--other", type=int, default=12, help="base-model essays as 'others'")
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument(
        "--classifier-essays", type=int, default=None, help="training essays for the classifier"
    )
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--out", default=None, help="report directory (default: a temp dir)")
    args = parser.parse_args()

    import torch

    from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT
    from chatpgt.evaluation import stats
    from chatpgt.evaluation.perplexity import (
        ExampleSpec,
        completion_ids,
        essay_parts,
        perplexity_interval,
        score_essays,
    )
    from chatpgt.evaluation.report import write_report
    from chatpgt.evaluation.table import format_table
    from chatpgt.style.classifier import StyleClassifier
    from chatpgt.training import corpus, recipes
    from chatpgt.training.schemas import (
        DEFAULT_CONTINUATION_TEMPLATE,
        DEFAULT_PROMPT_TEMPLATES,
        SampleSpec,
    )

    model_path = args.model
    if model_path is None:
        from chatpgt.providers.smollm2 import ensure_smollm2

        model_path = str(ensure_smollm2(Path(tempfile.gettempdir()) / "chatpgt-bench-models"))
    timings: dict[str, float] = {}

    def timed(key: str, t0: float) -> None:
        timings[key] = round(time.monotonic() - t0, 2)
        print(f"{key}: {timings[key]}", flush=True)

    essays = corpus.load_essays(args.corpus)
    train, held_all = corpus.split_train_eval(essays, 0.2, 42)
    held = held_all[: args.essays]
    spec = ExampleSpec(
        DEFAULT_PROMPT_TEMPLATES,
        DEFAULT_CONTINUATION_TEMPLATE,
        30,
        args.max_length,
        42,
        DEFAULT_SYSTEM_PROMPT,
    )
    device = recipes.Device.detect()
    tokenizer, _ = recipes.load_tokenizer(model_path)
    base: Any = recipes.load_model(model_path, device)
    if device.cuda:
        base = base.to("cuda")
    measure, count = recipes.token_counters(tokenizer, DEFAULT_SYSTEM_PROMPT)
    t0 = time.monotonic()
    parts = essay_parts(held, spec, measure, count)
    timed("build_parts_s", t0)
    titles = [e.title for e in held]
    prompts = [f'Write an essay titled "{t}".' for t in titles]
    sample = SampleSpec(prompts=prompts, max_new_tokens=args.max_new_tokens)

    t0 = time.monotonic()
    other_prompts = [f'Write an essay titled "{e.title}".' for e in train[: args.other]]
    other = [
        s["text"]
        for s in recipes.generate_samples(
            base,
            tokenizer,
            SampleSpec(prompts=other_prompts[:20], max_new_tokens=args.max_new_tokens),
            seed=1,
        )
    ]
    timed("other_essays_generation_s", t0)
    t0 = time.monotonic()
    author = [e.text for e in train[: args.classifier_essays]]
    classifier = StyleClassifier.train(author, other, seed=0)
    timed("style_classifier_train_cv_s", t0)

    models: list[tuple[str, str, Any]] = [("base", "base", base)]
    if args.sft_steps:
        t0 = time.monotonic()
        sft = copy.deepcopy(base).train()
        rows = [
            completion_ids(tokenizer, r)
            for p in essay_parts(train[:40], spec, measure, count)
            for r in p
        ]
        optimizer = torch.optim.AdamW(sft.parameters(), lr=args.lr)
        dev = next(sft.parameters()).device
        for step in range(args.sft_steps):
            ids, start = rows[step % len(rows)]
            labels = [-100] * start + ids[start:]
            loss = sft(
                input_ids=torch.tensor([ids], device=dev), labels=torch.tensor([labels], device=dev)
            ).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        timed("short_sft_s", t0)
        models.append(("short-sft", "sft", sft.eval()))

    entries = []
    for name, kind, model in models:
        entry: dict[str, Any] = {"name": name, "kind": kind, "timings_s": {}}
        t0 = time.monotonic()
        scores = score_essays(model, tokenizer, parts, titles)
        entry["perplexity"] = perplexity_interval(scores, samples=1000, seed=0).as_dict()
        entry["timings_s"]["perplexity_s"] = round(time.monotonic() - t0, 2)
        entry["timings_s"]["scored_tokens"] = sum(s.tokens for s in scores)
        t0 = time.monotonic()
        texts = [s["text"] for s in recipes.generate_samples(model, tokenizer, sample, seed=0)]
        entry["timings_s"]["generation_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        entry["style"] = stats.bootstrap(classifier.score(texts), stats.mean, seed=0).as_dict()
        entry["descriptive"] = stats.descriptive(texts)
        entry["timings_s"]["style_and_stats_s"] = round(time.monotonic() - t0, 2)
        entry["generations"] = [{"title": t, "text": x} for t, x in zip(titles, texts, strict=True)]
        entries.append(entry)
        print(name, entry["timings_s"], flush=True)
    report = {
        "run_id": "bench",
        "name": f"{Path(model_path).name}, {len(held)} held-out essays",
        "heldout": {
            "statement": f"{len(held)} of the {len(held_all)} essays an SFT run with eval_fraction "
            "0.2 and seed 42 holds out; the short SFT trained on training essays only.",
            "titles": titles,
        },
        "models": entries,
        "real_essays": {
            "style": stats.bootstrap(
                classifier.score([e.text for e in held]), stats.mean
            ).as_dict(),
            "descriptive": stats.descriptive([e.text for e in held]),
        },
        "style_classifier": classifier.describe(),
        "judge": None,
        "notes": [f"device {'cuda' if device.cuda else 'cpu'}; timings {timings}"],
        "timings_s": timings,
    }
    out = Path(args.out or tempfile.mkdtemp(prefix="chatpgt-eval-bench-"))
    _, html = write_report(report, out)
    print(format_table(report))
    for e in entries:
        print(e["name"], e["timings_s"])
    print("classifier", classifier.describe())
    print("report:", html)


if __name__ == "__main__":
    main()
