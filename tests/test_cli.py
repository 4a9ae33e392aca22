"""The ``chatpgt`` command as a user runs it: a real subprocess against the real API (uvicorn),
Postgres, Redis, a Celery datagen worker and the fake provider server.

Training runs are not started here (a full run is covered by the training tests); the training
commands are checked for the requests they build and for the API's refusal shown as one line.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console, RenderableType
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt import launch
from chatpgt.api_client import ApiError, ChatPGTClient, InvalidRequest, UnexpectedAnswer
from chatpgt.api_client import requests as build
from chatpgt.cli import datagen as datagen_cli
from chatpgt.cli import pairs as pairs_cli
from chatpgt.cli import train as train_cli
from chatpgt.datagen.pairing import PairingRule
from chatpgt.datagen.schemas import DatagenJobView, StageCounts
from chatpgt.training.models import RegisteredModel
from chatpgt.training.schemas import TrainingRunOut
from tests import procs

pytestmark = pytest.mark.e2e

WRITERS = ("-g", "fake:writer-a:2:0.7", "-g", "fake:writer-b", "-j", "fake:judge")


@pytest.fixture
def faults(fake_provider: str) -> Iterator[httpx.Client]:
    """Control client of the fake provider; its profile is reset before and after each test."""
    with httpx.Client(base_url=fake_provider, timeout=10) as c:
        c.post("/_control/reset")
        yield c
        c.post("/_control/reset")


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    """The API, for comparing what the CLI shows with what the API answers."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def cli_env(service_env: dict[str, str]) -> dict[str, str]:
    # A wide, uncoloured console so that lines are not wrapped; stderr flushed as written.
    return {**service_env, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}


def argv(api_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "chatpgt.cli", "--api", api_url, *args]


def run_cli(
    env: dict[str, str], api_url: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv(api_url, *args),
        cwd=procs.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0].removeprefix("error: ")


def count_before(noun: str, text: str) -> int:
    """The number in '<n> pair(s)' (the first one)."""
    match = re.search(rf"(\d+) {noun}s?\b", text)
    assert match, text
    return int(match.group(1))


def test_topics_add_and_import(
    http: httpx.Client, clean_db: None, cli_env: dict[str, str], api_url: str, tmp_path: Path
) -> None:
    added = run_cli(cli_env, api_url, "topics", "add", "On taste", "On focus", "on  taste")
    assert added.returncode == 0, added.stderr
    assert "2 topics added, 0 already present" in added.stdout
    again = run_cli(cli_env, api_url, "topics", "add", "On focus", "On cities")
    assert "1 topic added, 1 already present" in again.stdout

    essays = tmp_path / "essays.csv"
    with essays.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "body"])
        writer.writerow(["On cities", "Great cities attract ambitious people."])
        writer.writerow(["Wealth", "Wealth is what people want."])
        writer.writerow(["wealth", "The same title again."])
    imported = run_cli(
        cli_env, api_url, "topics", "import", str(essays), "--column", "name",
        "--text-column", "body",
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("3 rows read: 1 topic created, 1 already present, 1 dup")
    assert "1 essay added to existing topics" in imported.stdout

    titles = tmp_path / "titles.txt"
    titles.write_text("Why startups die\n\nOn taste\n")
    plain = run_cli(cli_env, api_url, "topics", "import", str(titles))
    assert "read: 1 topic created, 1 already present" in plain.stdout, plain.stdout

    items = (http.get("/topics")).json()["items"]
    by_title = {t["title"]: t for t in items}
    assert set(by_title) == {"On taste", "On focus", "On cities", "Wealth", "Why startups die"}
    assert by_title["On cities"]["has_reference_text"] and by_title["Wealth"]["has_reference_text"]
    assert by_title["Why startups die"]["source"] == "file"

    # The file is read by the API process: a missing one is its 400, as one line.
    missing = run_cli(cli_env, api_url, "topics", "import", str(tmp_path / "nope.txt"))
    assert missing.returncode == 1
    assert "nope.txt" in one_error_line(missing)
    blank = run_cli(cli_env, api_url, "topics", "add", "Fine", '""')
    assert blank.returncode == 2
    assert "titles.1: A title must hold a letter or a digit" in one_error_line(blank)
    neither = run_cli(cli_env, api_url, "topics", "import")
    assert neither.returncode == 2
    assert "--hf" in one_error_line(neither)


def test_datagen_run_follows_then_stats_and_export_match_the_api(
    http: httpx.Client,
    clean_db: None,
    datagen_worker: procs.Proc,
    faults: httpx.Client,
    cli_env: dict[str, str],
    api_url: str,
    tmp_path: Path,
) -> None:
    topics_file = tmp_path / "topics.txt"
    topics_file.write_text("# a comment\nWhy taste matters\n\nHow to start a startup\n")
    done = run_cli(
        cli_env, api_url, "datagen", "run", "--topic", "On wealth", "--topics-file",
        str(topics_file), *WRITERS, "--pairing", "all_pairs", "--max-tokens", "200",
        "--budget", "5",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = (http.get("/datagen/jobs")).json()["items"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["status"] == "succeeded" and job["topics"] == 3 and job["pairs"] > 0
    assert job["request"]["generators"][0]["samples_per_topic"] == 2
    assert job["request"]["generators"][1]["max_tokens"] == 200
    assert f"submitted job {job['id']}: 3 topics" in done.stderr
    # Progress lines while it ran, then the final status line on stdout.
    assert f"job {job['id']} " in done.stderr
    final = done.stdout.strip().splitlines()[0]
    assert final.startswith(f"job {job['id']} succeeded: ")
    assert count_before("pair", final) == job["pairs"]
    assert f"generations {job['generations']['done']}/9" in final

    status = run_cli(cli_env, api_url, "datagen", "status", str(job["id"]))
    assert status.returncode == 0 and status.stdout.strip().splitlines()[0] == final

    # pairs stats: the table's total is the API's, and --json is the API's answer.
    api_stats = (http.get("/pairs/stats", params={"job_id": job["id"]})).json()
    table = run_cli(cli_env, api_url, "pairs", "stats", "--job", str(job["id"]))
    assert table.returncode == 0, table.stderr
    assert count_before("pair", table.stdout) == api_stats["counts"]["total"] == job["pairs"]
    for model in api_stats["models"]:
        assert model["model"] in table.stdout
    assert f"{api_stats['cost']['total_cost_usd']:.4f}" in table.stdout
    as_json = run_cli(cli_env, api_url, "pairs", "stats", "--json", "--min-confidence", "6")
    api_stats6 = (http.get("/pairs/stats", params={"min_confidence": 6})).json()
    assert json.loads(as_json.stdout) == api_stats6

    # pairs export: the file holds exactly what GET /pairs/export serves.
    out = tmp_path / "out" / "pairs.jsonl"
    exported = run_cli(
        cli_env, api_url, "pairs", "export", "--out", str(out), "--min-confidence", "6"
    )
    assert exported.returncode == 0, exported.stderr
    served = http.get("/pairs/export", params={"format": "jsonl", "min_confidence": 6})
    assert out.read_bytes() == served.content
    rows = served.content.count(b"\n")
    assert rows == api_stats6["counts"]["total"]
    assert exported.stdout.startswith(f"wrote {rows} pair")
    assert not list(out.parent.glob(".*partial"))

    as_csv = tmp_path / "pairs.csv"
    exported = run_cli(cli_env, api_url, "pairs", "export", "-f", "csv", "-o", str(as_csv))
    served = http.get("/pairs/export", params={"format": "csv"})
    assert as_csv.read_bytes() == served.content
    csv_rows = list(csv.DictReader(io.StringIO(served.text)))
    assert len(csv_rows) == job["pairs"] and count_before("pair", exported.stdout) == job["pairs"]


def _default_sigint() -> None:
    """In the child: Ctrl-C as in a terminal. A suite started in the background of a script
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt in the CLI."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_detaches_or_cancels_the_job(
    http: httpx.Client,
    clean_db: None,
    datagen_worker: procs.Proc,
    faults: httpx.Client,
    cli_env: dict[str, str],
    api_url: str,
) -> None:
    faults.post("/_control", json={"latency_ms": 400})
    topics = [arg for i in range(30) for arg in ("-t", f"Slow topic {i}")]
    writers = ("-g", "fake-slow:writer-a", "-g", "fake-slow:writer-b", "-j", "fake-slow:judge")
    run = subprocess.Popen(
        argv(api_url, "datagen", "run", *topics, *writers),
        cwd=procs.ROOT,
        env=cli_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        assert run.stderr is not None and run.stdin is not None
        submitted = run.stderr.readline()
        job_id = int(re.findall(r"submitted job (\d+)", submitted)[0])
        run.stderr.readline()  # the first progress line: it is following

        # `datagen status --follow`, interrupted with no one to answer, detaches (130).
        watch = subprocess.Popen(
            argv(api_url, "datagen", "status", str(job_id), "--follow"),
            cwd=procs.ROOT,
            env=cli_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        assert watch.stderr is not None
        assert watch.stderr.readline().startswith(f"job {job_id} ")
        watch.send_signal(signal.SIGINT)
        _, rest = watch.communicate(timeout=20)
        assert watch.returncode == 130, rest
        assert "detached from job" in rest and f"datagen status {job_id} --follow" in rest
        assert (http.get(f"/datagen/jobs/{job_id}")).json()["status"] in ("queued", "running")

        # `datagen run`, interrupted and answered "c", cancels the job and follows it to the end.
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate("c\n", timeout=40)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "Cancel job" in stderr and "leave it running? [c/d]" in stderr
    assert "cancel requested" in stderr
    job = (http.get(f"/datagen/jobs/{job_id}")).json()
    assert job["status"] == "cancelled" and job["generations"]["cancelled"] > 0
    assert stdout.startswith(f"job {job_id} cancelled: ")


def test_errors_are_one_line(
    http: httpx.Client, clean_db: None, cli_env: dict[str, str], api_url: str
) -> None:
    unknown = run_cli(cli_env, api_url, "datagen", "status", "999999")
    assert unknown.returncode == 1
    detail = (http.get("/datagen/jobs/999999")).json()["detail"]
    assert one_error_line(unknown) == detail
    assert one_error_line(run_cli(cli_env, api_url, "datagen", "cancel", "999999")) == detail

    dead = f"http://127.0.0.1:{procs.free_port()}"
    unreachable = run_cli(cli_env, dead, "pairs", "stats")
    assert unreachable.returncode == 1
    assert one_error_line(unreachable).startswith(f"cannot reach the API at {dead}: ")
    not_a_url = run_cli(cli_env, "ftp://example", "models", "list")
    assert one_error_line(not_a_url).startswith("cannot reach the API at ftp://example")

    # Usage errors: exit code 2, and nothing is submitted.
    for bad in (
        ["-t", "x", "-g", "fake", "-j", "fake:judge"],  # no model
        ["-t", "x", "-g", "fake:writer-a:1.5", "-j", "fake:judge"],  # samples not whole
        ["-g", "fake:writer-a:2", "-j", "fake:judge"],  # no topics
        ["-t", "x", "--sample", "3", "-g", "fake:writer-a:2", "-j", "fake:judge"],  # two ways
        ["-t", "x", "-g", "fake:writer-a", "-j", "fake:judge"],  # one candidate per topic
        ["-t", "x", "-g", "fake:writer-a:2:9", "-j", "fake:judge"],  # temperature > 2
    ):
        refused = run_cli(cli_env, api_url, "datagen", "run", *bad)
        assert refused.returncode == 2, (bad, refused.stderr)
        one_error_line(refused)
    assert run_cli(cli_env, api_url, "pairs", "export", "-o", "x", "-f", "xml").returncode == 2
    assert (http.get("/datagen/jobs")).json()["items"] == []


def test_typer_usage_errors_are_one_line(cli_env: dict[str, str]) -> None:
    """Click's own errors (missing option, bad value, unknown command or option) look like ours:
    one line, exit code 2, no boxed panel."""
    cases = [
        (["datagen", "run", "-t", "x"], "Missing option '--generator'", "chatpgt datagen run"),
        (["pairs", "export", "-o", "x", "-f", "xml"], "'xml' is not one", "chatpgt pairs export"),
        (["train", "status", "abc"], "Invalid value for 'run_id'", "chatpgt train status"),
        (["models", "list", "--bogus"], "No such option: --bogus", "chatpgt models list"),
        (["nope"], "No such command 'nope'", "chatpgt"),
    ]
    for args, message, command in cases:
        done = run_cli(cli_env, "http://unused", *args)
        assert done.returncode == 2, (args, done.stderr)
        line = one_error_line(done)
        assert message in line and line.endswith(f"(see `{command} --help`)"), line
        assert done.stdout == "" and "╭" not in done.stderr
    # A group without its command still shows the group's help.
    bare = run_cli(cli_env, "http://unused", "datagen")
    assert bare.returncode == 2 and "Usage: chatpgt datagen" in bare.stdout + bare.stderr


def test_a_job_that_produces_nothing_exits_1_with_its_outcome(
    http: httpx.Client,
    clean_db: None,
    datagen_worker: procs.Proc,
    faults: httpx.Client,
    cli_env: dict[str, str],
    api_url: str,
) -> None:
    # Every verdict is malformed: every judgment fails, and the job makes no pair.
    faults.post("/_control", json={"rate_malformed_judge": 1.0})
    done = run_cli(
        cli_env, api_url, "datagen", "run", "-t", "On taste", "-t", "On focus", *WRITERS,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    (job,) = http.get("/datagen/jobs").json()["items"]
    assert job["pairs"] == 0 and job["judgments"]["failed"] == job["judgments"]["total"] > 0
    assert job.get("outcome") in (None, "nothing_produced")
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"job {job['id']} {job['status']}: 0 pairs"), done.stdout
    assert "outcome: nothing_produced" in lines
    assert any(line.startswith("  judgment") for line in lines), done.stdout

    status = run_cli(cli_env, api_url, "datagen", "status", str(job["id"]))
    assert status.returncode == 1 and status.stdout.splitlines()[0] == lines[0]
    assert "outcome: nothing_produced" in status.stdout
    as_json = run_cli(cli_env, api_url, "datagen", "status", str(job["id"]), "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["id"] == job["id"]

    # The same topics with good verdicts: pairs, exit 0, no outcome line.
    faults.post("/_control/reset")
    good = run_cli(cli_env, api_url, "datagen", "run", "-t", "On taste", *WRITERS, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "outcome:" not in good.stdout


def test_train_dpo_refusal_is_the_api_detail(
    http: httpx.Client, clean_db: None, cli_env: dict[str, str], api_url: str
) -> None:
    refused = run_cli(
        cli_env, api_url, "train", "dpo", "--model", "someone/some-model", "--job", "424242",
        "--min-confidence", "7", "--no-follow",
    )  # fmt: skip
    assert refused.returncode == 1
    body = {"model": "someone/some-model", "pairs": {"job_ids": [424242], "min_confidence": 7}}
    answer = http.post("/train/dpo", json=body)
    assert answer.status_code == 400
    assert one_error_line(refused) == answer.json()["detail"]
    assert "No preference pair matches" in answer.json()["detail"]

    missing = run_cli(cli_env, api_url, "train", "status", "31337")
    assert one_error_line(missing) == "Training run 31337 does not exist."
    bad_lr = run_cli(cli_env, api_url, "train", "sft", "--lr", "3", "--no-follow")
    assert bad_lr.returncode == 2
    assert "learning_rate" in one_error_line(bad_lr)
    assert (http.get("/train/runs")).json()["items"] == []


async def test_models_list(
    api: httpx.AsyncClient,
    session: AsyncSession,
    cli_env: dict[str, str],
    api_url: str,
) -> None:
    assert run_cli(cli_env, api_url, "models", "list").stdout.strip() == "no models registered yet"
    base = RegisteredModel(name="tiny-base", kind="base", path="/models/tiny-base")
    session.add(base)
    await session.flush()
    session.add(RegisteredModel(name="tiny-sft", kind="sft", path="/m/sft", parent_id=base.id))
    await session.commit()

    table = run_cli(cli_env, api_url, "models", "list")
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "tiny-" in line]
    assert len(lines) == 2 and "tiny-base" in lines[1] and "/m/sft" in lines[1]
    as_json = run_cli(cli_env, api_url, "models", "list", "--json")
    served = (await api.get("/models")).json()["items"]
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == served


def test_migrate_serve_and_worker_commands(
    service_env: dict[str, str], cli_env: dict[str, str], log_dir: Path
) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(procs.ROOT / "alembic.ini"))).get_current_head()
    migrated = run_cli(cli_env, "http://unused", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == f"database at revision {head}"

    port = procs.free_port()
    server = procs.Proc("cli-serve", argv("-", "serve", "--port", str(port)), cli_env, log_dir)
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", server)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    finally:
        server.stop()

    name = f"cli-{procs.free_port()}@%h"
    worker = procs.Proc(
        "cli-worker", argv("-", "worker", "-Q", "datagen", "-c", "1", "-n", name), cli_env, log_dir
    )
    try:
        procs.wait_log(worker, "ready.")
        assert re.search(r"concurrency:\s+1 \(prefork\)", worker.log())
        assert re.search(r"\.> datagen\s", worker.log())
    finally:
        worker.stop()


# ---------------------------------------------------------------------------------------------
# Request building and display, in process
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fake:writer-a", {"provider": "fake", "model": "writer-a"}),
        ("fake:writer-a:3", {"provider": "fake", "model": "writer-a", "samples_per_topic": 3}),
        (
            "openai:gpt-4o-mini:2:0.9",
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "samples_per_topic": 2,
                "temperature": 0.9,
            },
        ),
        ("openrouter:org/model:free", {"provider": "openrouter", "model": "org/model:free"}),
        (
            "openrouter:org/model:free:2",
            {"provider": "openrouter", "model": "org/model:free", "samples_per_topic": 2},
        ),
    ],
)
def test_parse_generator(spec: str, expected: dict[str, Any]) -> None:
    assert build.parse_generator(spec) == expected


@pytest.mark.parametrize("spec", ["fake", "fake:", ":model", "fake:writer-a:0.5"])
def test_parse_generator_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        build.parse_generator(spec)


def test_job_request_sends_only_what_was_given() -> None:
    request = build.build_job_request(
        sample=5,
        seed=7,
        generators=["fake:writer-a:2:0.5", "fake:writer-b"],
        judge="fake:judge",
        pairing=PairingRule.ALL_PAIRS,
        max_tokens=300,
    )
    assert request.model_dump(mode="json", exclude_unset=True) == {
        "topics": {"sample": 5, "seed": 7},
        "generators": [
            {
                "provider": "fake",
                "model": "writer-a",
                "samples_per_topic": 2,
                "temperature": 0.5,
                "max_tokens": 300,
            },
            {"provider": "fake", "model": "writer-b", "max_tokens": 300},
        ],
        "judge": {"provider": "fake", "model": "judge"},
        "pairing": "all_pairs",
    }
    deduped = build.build_job_request(
        titles=["x"], generators=["fake:a:2"], judge="fake:j", dedup_threshold=0.8
    )
    assert deduped.model_dump(mode="json", exclude_unset=True)["dedup"] == {"threshold": 0.8}
    for bad in (0.0, 1.5):
        with pytest.raises(build.InvalidRequest, match="dedup.threshold"):
            build.build_job_request(
                titles=["x"], generators=["fake:a:2"], judge="fake:j", dedup_threshold=bad
            )


def test_training_requests_mirror_the_schemas() -> None:
    assert build.build_sft_request().model_dump(exclude_unset=True) == {}
    sft = build.build_sft_request(
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        corpus="essays.csv",
        name="smol-graham",
        options=build.TrainingOptions(
            epochs=1, batch_size=4, grad_accum=2, learning_rate=2e-5, max_steps=10, lora_r=8
        ),
        sample_prompts=["Write an essay titled 'Taste'."],
    )
    assert sft.model_dump(mode="json", exclude_unset=True) == {
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "corpus": "essays.csv",
        "name": "smol-graham",
        "hyperparameters": {
            "epochs": 1,
            "per_device_batch_size": 4,
            "gradient_accumulation_steps": 2,
            "learning_rate": 2e-5,
            "max_steps": 10,
            "lora": {"r": 8},
        },
        "samples": {"prompts": ["Write an essay titled 'Taste'."]},
    }
    # Server defaults apply where nothing was given.
    assert sft.hyperparameters.warmup_ratio == 0.03 and sft.hyperparameters.lora is not None
    dpo = build.build_dpo_request(
        model="3",
        min_confidence=7,
        job_ids=[1, 2],
        beta=0.2,
        loss_type="ipo",
        options=build.TrainingOptions(lora=True, lr_scheduler="cosine"),
        no_samples=True,
    )
    assert dpo.model_dump(mode="json", exclude_unset=True) == {
        "model": "3",
        "pairs": {"min_confidence": 7, "job_ids": [1, 2]},
        "hyperparameters": {"lr_scheduler": "cosine", "beta": 0.2, "loss_type": "ipo", "lora": {}},
        "samples": {"prompts": []},
    }
    for bad in (
        lambda: build.build_dpo_request(model="m", min_confidence=11),
        lambda: build.build_sft_request(options=build.TrainingOptions(epochs=0)),
        lambda: build.build_sft_request(no_samples=True, sample_prompts=["x"]),
    ):
        with pytest.raises(InvalidRequest):
            bad()


def test_client_errors_are_one_line() -> None:
    answers = {
        "/topics": httpx.Response(
            422,
            json={
                "detail": "The request does not match the schema.",
                "errors": [{"loc": ["body", "titles"], "msg": "List should have at least 1 item"}],
            },
        ),
        "/datagen/jobs/5": httpx.Response(502, text="<html>bad gateway</html>"),
        "/train/runs/5": httpx.Response(200, json={"hello": "world"}),
        "/models": httpx.Response(404, json={"detail": "Not Found"}),
    }
    transport = httpx.MockTransport(lambda request: answers[request.url.path])
    with ChatPGTClient("http://api.test", transport=transport) as client:
        with pytest.raises(ApiError) as problem:
            client.add_topics(["x"])
        assert str(problem.value) == (
            "The request does not match the schema: titles: List should have at least 1 item"
        )
        with pytest.raises(ApiError, match=r"^the API answered 502 Bad Gateway$"):
            client.get_job(5)
        with pytest.raises(UnexpectedAnswer, match="not a TrainingRunOut"):
            client.get_run(5)
        with pytest.raises(ApiError, match=r"has no /models \(is it the ChatPGT API\?\)"):
            client.list_models()


def test_import_requests(tmp_path: Path) -> None:
    hf = build.build_import_request(
        path=None, hf="sgoel9/paul_graham_essays", split="train", column="title", as_corpus=True
    )
    assert hf.model_dump(exclude_unset=True) == {
        "source": "hf",
        "dataset": "sgoel9/paul_graham_essays",
        "split": "train",
        "column": "title",
        "as_corpus": True,
    }
    local = tmp_path / "titles.txt"
    local.write_text("A title\n")
    sent = build.build_import_request(path=str(local), hf=None, file_format="txt", limit=5)
    assert sent.model_dump(exclude_unset=True) == {
        "source": "file",
        "path": str(local.resolve()),
        "format": "txt",
        "limit": 5,
        "as_corpus": False,
    }
    for bad in (
        {"path": "a.txt", "hf": "x/y"},
        {"path": "a.txt", "hf": None, "split": "train"},
        {"path": None, "hf": "x/y", "file_format": "csv"},
    ):
        with pytest.raises(InvalidRequest):
            build.build_import_request(**bad)  # type: ignore[arg-type]


def test_worker_arguments() -> None:
    gpu = launch.worker_argv("gpu", None)
    assert gpu[:5] == ["worker", "-Q", "gpu", "-n", "gpu@%h"]
    assert gpu[-4:] == ["--pool", "solo", "-c", "1"] and "--without-mingle" in gpu
    assert launch.worker_argv("datagen", 8)[-4:] == ["--pool", "prefork", "-c", "8"]
    assert launch.worker_argv("datagen", None)[-2:] == ["--pool", "prefork"]
    with pytest.raises(ValueError):
        launch.worker_argv("gpu", 4)
    # Started by module name: the library never imports the api or workers packages.
    worker = launch.worker_command("datagen", 2, python="py")
    assert worker[:6] == ["py", "-m", "celery", "-A", "workers.app", "worker"]
    assert worker[-2:] == ["-c", "2"]
    assert launch.api_command(host="0.0.0.0", port=9, python="py") == [
        "py", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "9",
        "--log-level", "info",
    ]  # fmt: skip


def chunked(data: bytes, size: int) -> Sequence[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_row_counter_counts_csv_rows_not_lines() -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["topic", "chosen"])
    rows = [["a", 'first line\nsecond "quoted" line\r\n'], ["b", "plain"], ['c"', "x,\ny"]]
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    for size in (1, 3, 7, len(data)):
        counter = pairs_cli.RowCounter("csv")
        for chunk in chunked(data, size):
            counter.feed(chunk)
        assert counter.rows == len(rows)
    jsonl = pairs_cli.RowCounter("jsonl")
    for chunk in chunked(b'{"a": 1}\n{"a": 2}\n', 5):
        jsonl.feed(chunk)
    assert jsonl.rows == 2


def render(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    console.print(renderable)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_job_display() -> None:
    now = datetime.now(UTC)
    job = DatagenJobView(
        id=7,
        status="running",
        stop_reason=None,
        error=None,
        created_at=now,
        started_at=now,
        finished_at=None,
        topics=3,
        generations=StageCounts(total=9, done=7, failed=1, pending=1),
        judgments=StageCounts(total=0),
        pairs=2,
        ties=1,
        prompt_tokens=10,
        completion_tokens=20,
        cost_usd=0.01234,
        budget_usd=2.0,
        errors=[],
        request={},
    )
    display = datagen_cli.JobDisplay()
    display.update(job, elapsed_s=5)
    screen = render(display.renderable())
    assert re.search(r"generations .* 8/9 +1 failed", screen), screen
    assert "job 7 running · 2 pairs · 1 tie · $0.0123 of $2.00 · 5s" in screen
    assert datagen_cli.job_summary(job) == (
        "job 7 running: 2 pairs (1 tie) from 3 topics · generations 7/9 (1 failed) · "
        "judgments 0/0 · $0.0123 of $2.00"
    )


def test_run_display_and_summary() -> None:
    now = datetime.now(UTC)
    run = TrainingRunOut(
        id=4,
        kind="dpo",
        status="running",
        name="smol-dpo",
        request={},
        start_model={},
        progress={"step": 3, "total_steps": 12, "epoch": 0.25, "eta_s": 95},
        metrics={"latest": {"loss": 0.6931}},
        examples={},
        data_report={},
        artifacts={"model_dir": "/runs/4/model"},
        samples=[],
        attempts=1,
        cancel_requested=False,
        error=None,
        created_at=now,
        started_at=now,
        finished_at=None,
        updated_at=now,
    )
    display = train_cli.RunDisplay()
    assert display.plain(run) == (
        "dpo run 4 running: step 3/12, loss 0.6931 · epoch 0.25 · ETA 1m 35s"
    )
    display.update(run, elapsed_s=61)
    screen = render(display.renderable())
    assert "dpo run 4" in screen and "step 3/12" in screen and "ETA 1m 35s" in screen
    assert "running · smol-dpo · 1m 01s" in screen
    finished = run.model_copy(
        update={
            "status": "succeeded",
            "model_id": 9,
            "progress": run.progress.model_copy(update={"step": 12}),
            "metrics": {"final": {"train_loss": 0.5, "eval_loss": 0.61}},
        }
    )
    assert train_cli.run_summary(finished) == (
        "dpo run 4 succeeded: model 'smol-dpo' (id 9) · step 12/12 · train_loss 0.5000 · "
        "eval_loss 0.6100"
    )


def test_scan_display_and_summary() -> None:
    from chatpgt.datasets.schemas import DedupProgress, DedupResult, DedupScanOut

    now = datetime.now(UTC)
    scan = DedupScanOut(
        id=5,
        status="queued",
        job_ids=[1, 2],
        threshold=0.7,
        progress=DedupProgress(),
        result=None,
        error=None,
        attempts=0,
        cancel_requested=False,
        created_at=now,
        started_at=None,
        finished_at=None,
        updated_at=None,
    )
    display = pairs_cli.ScanDisplay()
    assert display.plain(scan) == "dedup scan 5 queued: 0/? essays"
    display.update(scan, elapsed_s=2)
    assert "queued (waiting for a datagen worker) · 2s" in render(display.renderable())
    running = scan.model_copy(
        update={"status": "running", "progress": DedupProgress(essays=1500, total=20000)}
    )
    display.update(running, elapsed_s=65)
    screen = render(display.renderable())
    assert "dedup scan 5" in screen and "1,500/20,000 essays" in screen, screen
    assert "running · 1m 05s" in screen
    assert pairs_cli.scan_summary(running) == "dedup scan 5 running: 1,500/20,000 essays"
    done = running.model_copy(
        update={
            "status": "succeeded",
            "result": DedupResult(
                job_ids=[1, 2],
                threshold=0.7,
                essays=20000,
                corpus_essays=1,
                flagged={"essay": 3, "corpus": 1},
            ),
        }
    )
    assert pairs_cli.scan_summary(done) == (
        "scanned 20000 essays against 1 corpus essay at 0.7: 3 near-copies of another essay, "
        "1 of a corpus essay"
    )


class JobWithOutcome(DatagenJobView):
    """A job view as an API with the job-outcome contract (issue 10) sends it."""

    outcome: str | None = None
    failure_summary: list[dict[str, Any]] = []


def a_job(status: str, pairs: int, failed: int = 0, **extra: Any) -> JobWithOutcome:
    now = datetime.now(UTC)
    return JobWithOutcome(
        id=3, status=status, stop_reason=None, error=None, created_at=now, started_at=now,
        finished_at=None, topics=2, generations=StageCounts(total=6, done=6),
        judgments=StageCounts(total=4, done=4 - failed, failed=failed), pairs=pairs, ties=0,
        prompt_tokens=0, completion_tokens=0, cost_usd=0.0, budget_usd=None, errors=[],
        request={}, **extra,
    )  # fmt: skip


def test_job_outcome_decides_the_exit_code() -> None:
    code, outcome = datagen_cli.job_exit_code, datagen_cli.job_outcome
    # The API's outcome, when it sends one, decides.
    nothing = a_job("succeeded", 0, outcome="nothing_produced")
    assert outcome(nothing) == "nothing_produced" and code(nothing) == 1
    partly = a_job("succeeded", 3, outcome="produced_with_failures")
    assert code(partly) == 0 and datagen_cli.followed_exit_code(partly) == 0
    assert code(a_job("failed", 0, outcome="nothing_produced")) == 1
    assert code(a_job("failed", 2)) == 1
    # A running job has no outcome yet and is not a failure; a cancelled one is when followed.
    assert outcome(a_job("running", 0)) is None and code(a_job("running", 0)) == 0
    cancelled = a_job("cancelled", 2, outcome="produced")
    assert code(cancelled) == 0 and datagen_cli.followed_exit_code(cancelled) == 1
    # An API without the field: the same rule from the counts of a finished job.
    assert outcome(a_job("succeeded", 0)) == "nothing_produced"
    assert outcome(a_job("succeeded", 2, failed=1)) == "produced_with_failures"
    assert outcome(a_job("succeeded", 2)) == "produced"

    summary = [
        {"stage": "judgment", "provider": "fake", "model": "judge", "reason": "bad  verdict",
         "count": 4},
        {"stage": "generation", "provider": "fake", "model": "writer-a", "reason": "HTTP 500",
         "count": 1},
    ]  # fmt: skip
    failed = a_job("failed", 0, outcome="nothing_produced", failure_summary=summary)
    assert datagen_cli.failure_reasons(failed) == [
        "judgment fake/judge: bad verdict (×4)",
        "generation fake/writer-a: HTTP 500 (×1)",
    ]
    kept = a_job("failed", 0).model_copy(
        update={"errors": [{"kind": "judgment", "id": 9, "error": "no verdict\nfound"}]}
    )
    assert datagen_cli.failure_reasons(kept) == ["judgment: no verdict found"]
