"""The docker compose stack, checked without Docker.

Docker cannot run here, so `docker-compose config` (Debian's `docker-compose` package) validates
and resolves compose.yaml, and the checks read what it resolved: services, health checks, start
order, the gpu profile, volumes, and the environment. The commands compose runs are compared with
the commands tests/procs.py starts (and with the Dockerfile's CMDs), so they cannot drift apart;
the migration command and the health-check script are run for real against Postgres, Redis, the
API and a Celery worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, delete, text
from sqlalchemy.orm import Session

from chatpgt.settings import PREDEFINED_PROVIDERS, Settings
from chatpgt.training.execution import make_sync_engine
from chatpgt.training.models import TrainingRun
from chatpgt.training.repository import RunStore
from tests import procs
from tests.conftest import PG_ADMIN_URL, alembic_config

ROOT = procs.ROOT
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = shutil.which("docker-compose")

APP_SERVICES = ("migrate", "api", "datagen-worker", "beat", "gpu-worker")
LONG_RUNNING = ("api", "datagen-worker", "gpu-worker")
SETTING_VARS = {
    f"{Settings.model_config.get('env_prefix', '')}{name}".upper(): name
    for name in Settings.model_fields
}
PROVIDER_KEY_VARS = {
    p["api_key_env"] for p in PREDEFINED_PROVIDERS.values() if p.get("api_key_env")
}


def _compose_config(env_file: Path) -> dict[str, Any]:
    if COMPOSE is None:
        pytest.skip(
            "docker-compose is not installed (apt-get install -y docker-compose); "
            "it validates compose.yaml without a Docker engine"
        )
    # A bare environment, so neither the caller's CHATPGT_* variables (conftest sets some) nor a
    # developer's .env change what compose resolves.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    out = subprocess.run(
        [COMPOSE, "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml")]
        + ["--env-file", str(env_file), "--profile", "gpu", "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"docker-compose config failed:\n{out.stderr}"
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """compose.yaml as `docker compose up` sees it with no .env and nothing set."""
    empty = tmp_path_factory.mktemp("compose") / "empty.env"
    empty.write_text("")
    return _compose_config(empty)


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = config["services"]
    return result


def _env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # compose v2 may print the list form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


# --- commands --------------------------------------------------------------------------------

# Values a deployment picks for itself; everything else on the command line must be identical.
DEPLOYMENT_KNOBS = {"--host", "--port", "-n", "-c", "--log-level", "--loglevel", "-s"}
BOOLEAN_FLAGS = {"--without-gossip", "--without-mingle", "--without-heartbeat"}


def _parse(argv: list[str]) -> tuple[str, list[str], dict[str, str | bool]]:
    """(program, positionals, options) of a command line, ``python -m X`` read as ``X``."""
    if len(argv) > 2 and argv[1] == "-m" and Path(argv[0]).name.startswith("python"):
        argv = argv[2:]
    positionals: list[str] = []
    options: dict[str, str | bool] = {}
    rest = iter(argv[1:])
    for token in rest:
        if token in BOOLEAN_FLAGS:
            options[token] = True
        elif token.startswith("-"):
            options[token] = next(rest)
        else:
            positionals.append(token)
    return Path(argv[0]).name, positionals, options


def _without_knobs(argv: list[str]) -> tuple[str, list[str], dict[str, str | bool]]:
    program, positionals, options = _parse(argv)
    return program, positionals, {k: v for k, v in options.items() if k not in DEPLOYMENT_KNOBS}


@pytest.fixture(scope="module")
def test_commands() -> dict[str, list[str]]:
    """The argv tests/procs.py starts the API and the workers with, captured without starting."""
    started: list[list[str]] = []

    class Recorder:
        def __init__(self, name: str, argv: list[str], *_: object) -> None:
            started.append(list(argv))

    mp = pytest.MonkeyPatch()
    mp.setattr(procs, "Proc", Recorder)
    mp.setattr(procs, "wait_http", lambda *a, **k: None)
    mp.setattr(procs, "wait_log", lambda *a, **k: None)
    try:
        procs.start_api({}, Path("."))
        procs.start_worker({}, Path("."), queue="datagen", concurrency=2)
        procs.start_worker({}, Path("."), queue="gpu")
        procs.start_beat({}, Path("."))
    finally:
        mp.undo()
    return dict(zip(["api", "datagen-worker", "gpu-worker", "beat"], started, strict=True))


def _dockerfile_cmds() -> dict[str, list[str]]:
    """CMD of each build stage of docker/Dockerfile, by stage name."""
    stage, cmds = "", {}
    for line in DOCKERFILE.read_text().splitlines():
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)\s*$", line, re.IGNORECASE):
            stage = m.group(1)
        elif line.startswith("CMD "):
            cmds[stage] = json.loads(line[4:])
    return cmds


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_compose_runs_the_commands_the_tests_run(
    name: str, services: dict[str, dict[str, Any]], test_commands: dict[str, list[str]]
) -> None:
    command = services[name]["command"]
    assert _without_knobs(command) == _without_knobs(test_commands[name])
    # The image run on its own (docker run) does the same as under compose.
    assert _dockerfile_cmds()[services[name]["build"]["target"]] == command


def test_one_beat_sends_the_periodic_tasks(
    services: dict[str, dict[str, Any]], test_commands: dict[str, list[str]]
) -> None:
    beat = services["beat"]
    assert _without_knobs(beat["command"]) == _without_knobs(test_commands["beat"])
    assert _parse(beat["command"])[1] == ["beat"]
    assert beat["build"] == services["datagen-worker"]["build"]  # the same code and tasks
    assert "deploy" not in beat and "profiles" not in beat  # exactly one, always on


def test_deployment_knobs_of_the_commands(services: dict[str, dict[str, Any]]) -> None:
    _, _, api = _parse(services["api"]["command"])
    assert (api["--host"], api["--port"]) == ("0.0.0.0", "8000")
    assert any(p.get("target") == 8000 or "8000" in str(p) for p in services["api"]["ports"])
    _, positionals, gpu = _parse(services["gpu-worker"]["command"])
    assert positionals == ["worker"]
    assert (gpu["-Q"], gpu["--pool"], gpu.get("-c", "1")) == ("gpu", "solo", "1")
    _, _, datagen = _parse(services["datagen-worker"]["command"])
    assert (datagen["-Q"], datagen["--pool"]) == ("datagen", "prefork")
    assert int(str(datagen["-c"])) >= 1


def test_migration_is_the_alembic_command_of_the_readme(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["restart"] == "no"
    # Same image as the API: the migrations ship with the code they belong to.
    assert migrate["build"] == services["api"]["build"]


# --- services, health, order, profile, volumes --------------------------------------------------


def test_services_and_health_checks(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "redis", "vllm", *APP_SERVICES, "prometheus"}
    for name in ("postgres", "redis", *LONG_RUNNING):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "healthcheck" not in services["migrate"]  # one-shot: it finishes, or it fails

    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]

    api_check = services["api"]["healthcheck"]["test"]
    assert api_check[1:4] == ["python", "docker/healthcheck.py", "http"]
    assert api_check[4] == "http://127.0.0.1:8000/healthz"

    # Each worker pings itself: the node in its health check is the name it runs under.
    for name in ("datagen-worker", "gpu-worker"):
        check = services[name]["healthcheck"]["test"]
        assert check[1:4] == ["python", "docker/healthcheck.py", "celery"]
        assert check[4] == _parse(services[name]["command"])[2]["-n"]
    assert services["gpu-worker"]["healthcheck"]["test"][5:] == ["--or-training"]


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    def conditions(name: str) -> dict[str, str]:
        return {dep: v["condition"] for dep, v in services[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    for name in LONG_RUNNING:
        assert conditions(name) == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        }, name
        assert services[name]["restart"] == "unless-stopped"


def test_gpu_worker_is_a_profile_with_one_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    profiled = {name: s["profiles"] for name, s in services.items() if s.get("profiles")}
    assert profiled == {"gpu-worker": ["gpu"], "prometheus": ["metrics"], "vllm": ["gpu"]}
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["build"]["args"]["FLAVOR"] == "gpu"
    for name in ("migrate", "api", "datagen-worker"):
        assert services[name]["build"]["args"]["FLAVOR"] == "cpu", name


def test_vllm_serves_a_registry_model_on_the_gpu_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    """The vllm service: a GPU of its own on the gpu profile, the artifacts volume mounted where
    the workers have it (so a registry model's path is a valid --model), an OpenAI-compatible
    port the other services reach as http://vllm:8001/v1, and a health check on /health."""
    vllm = services["vllm"]
    assert vllm["profiles"] == ["gpu"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    command = vllm["command"]
    options = dict(zip(command[::2], command[1::2], strict=True))
    assert options["--port"] == "8001" and options["--host"] == "0.0.0.0"
    assert options["--model"] == "HuggingFaceTB/SmolLM3-3B"  # VLLM_MODEL unset
    assert options["--served-model-name"] == "chatpgt"
    artifacts_dir = _env(services["gpu-worker"])["CHATPGT_ARTIFACTS_DIR"]
    assert _mounts(vllm)[artifacts_dir] == "artifacts"
    read_only = [v for v in vllm["volumes"] if isinstance(v, dict) and v["target"] == artifacts_dir]
    assert not read_only or read_only[0].get("read_only") is True
    check = vllm["healthcheck"]["test"]
    assert "http://127.0.0.1:8001/health" in check[-1]
    assert "depends_on" not in vllm  # serving needs neither the database nor the queue


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's volumes (short or long syntax)."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        result[target] = source
    return result


def test_volumes(config: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres-data", "artifacts"} <= set(config["volumes"])
    assert _mounts(services["postgres"])["/var/lib/postgresql/data"] == "postgres-data"
    # Models trained by the gpu worker are seen by the API and the datagen worker (on-policy
    # generators): one volume, mounted where CHATPGT_ARTIFACTS_DIR points in each.
    for name in LONG_RUNNING:
        artifacts_dir = _env(services[name])["CHATPGT_ARTIFACTS_DIR"]
        assert _mounts(services[name]).get(artifacts_dir) == "artifacts", name


# --- environment ---------------------------------------------------------------------------------


def test_every_setting_reaches_every_process(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        env = _env(services[name])
        missing = (set(SETTING_VARS) | PROVIDER_KEY_VARS) - set(env)
        assert not missing, f"{name} does not pass {sorted(missing)}"


def test_services_point_at_each_other(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["api"])
    pg = services["postgres"]["environment"]
    user, password, db = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
    assert (
        env["CHATPGT_DATABASE_URL"] == f"postgresql+asyncpg://{user}:{password}@postgres:5432/{db}"
    )
    assert env["CHATPGT_BROKER_URL"].startswith("redis://redis:6379/")
    assert env["CHATPGT_RATE_LIMIT_REDIS_URL"].startswith("redis://redis:6379/")
    # Redis must not hand a running training task to another worker: the timeout is well above
    # the library's own default (itself sized for a long run).
    default_timeout = Settings.model_fields["broker_visibility_timeout_s"].default
    assert int(env["CHATPGT_BROKER_VISIBILITY_TIMEOUT_S"]) >= 2 * default_timeout
    for name in APP_SERVICES:
        assert _env(services[name]) == env, f"{name} is configured unlike the api"


def _env_example() -> tuple[dict[str, str], dict[str, str]]:
    """NAME -> value of .env.example: (the active lines, every line, commented out or not)."""
    active, listed = {}, {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.fullmatch(r"(#)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            value = m.group(3).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            listed[m.group(2)] = value
            if not m.group(1):
                active[m.group(2)] = value
    return active, listed


def test_env_example_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    active, listed = _env_example()
    assert not set(SETTING_VARS) - set(listed), "settings missing from .env.example"
    assert not {v for v in listed if v.startswith("CHATPGT_")} - set(SETTING_VARS), (
        ".env.example lists variables that are no setting"
    )
    for var in PROVIDER_KEY_VARS:
        assert active.get(var) == "", f"{var} must be listed, empty"
    for var in os.environ:
        if var.startswith("CHATPGT_"):
            monkeypatch.delenv(var)
    # Settings that compose leaves alone show chatpgt.settings' default (compose-set ones are
    # compared with compose.yaml below).
    for var, value in active.items():
        field = SETTING_VARS.get(var)
        if field is None or var in COMPOSE_SETS:
            continue
        monkeypatch.setenv(var, value)
        parsed = getattr(Settings(), field)
        default = Settings.model_fields[field].get_default(call_default_factory=True)
        assert parsed == default, f".env.example: {var}={value} is not the default {default!r}"
        monkeypatch.delenv(var)


# Settings compose.yaml gives a value of its own (the others pass through when set).
COMPOSE_SETS = {
    "CHATPGT_DATABASE_URL",
    "CHATPGT_BROKER_URL",
    "CHATPGT_RATE_LIMIT_REDIS_URL",
    "CHATPGT_BROKER_VISIBILITY_TIMEOUT_S",
    "CHATPGT_ARTIFACTS_DIR",
    "CHATPGT_MODEL_CACHE_DIR",
    # The published API asks every client for a key.
    "CHATPGT_AUTH",
    # ... and reads request paths only from ./data and the artifacts volume.
    "CHATPGT_DATA_ROOTS",
    # Every process's metric samples go to the shared metrics volume.
    "CHATPGT_METRICS_DIR",
}


def test_compose_sets_exactly_the_settings_it_should(services: dict[str, dict[str, Any]]) -> None:
    env = _env(services["api"])
    assert {v for v in SETTING_VARS if env.get(v) is not None} == COMPOSE_SETS
    # What .env.example shows for them, even commented out, is what compose sets.
    _, listed = _env_example()
    for var in COMPOSE_SETS:
        assert listed[var] == env[var], f".env.example shows {var}={listed[var]}, not {env[var]}"


def test_copying_env_example_to_env_changes_nothing(config: dict[str, Any]) -> None:
    example = _compose_config(ENV_EXAMPLE)
    active, _ = _env_example()
    for name, service in config["services"].items():
        env = _env(service)
        if not env:
            continue
        # Pass-through variables take .env.example's value (its defaults are checked above).
        resolved = {k: active.get(k) if v is None else v for k, v in env.items()}
        assert _env(example["services"][name]) == resolved, name
        service = {**service, "environment": resolved}
        assert {**example["services"][name], "environment": resolved} == service, name
    assert {k: v for k, v in example.items() if k != "services"} == {
        k: v for k, v in config.items() if k != "services"
    }


# --- the image's contents --------------------------------------------------------------------


def test_build_context_keeps_what_the_commands_need_and_no_secrets() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git"} <= ignored
    needed = {"alembic.ini", "migrations", "chatpgt", "api", "workers", "docker", "pyproject.toml"}
    assert not needed & ignored
    assert not any(p.endswith(".py") or p.startswith("docker/healthcheck") for p in ignored)


# --- the commands, for real --------------------------------------------------------------------


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"chatpgt_compose_{uuid.uuid4().hex[:10]}"
    admin_url = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migrate_command_brings_a_new_database_to_head(
    services: dict[str, dict[str, Any]], fresh_database: str
) -> None:
    url = fresh_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/root"),
        "CHATPGT_DATABASE_URL": url,
    }
    out = subprocess.run(
        services["migrate"]["command"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = create_engine(fresh_database.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head
    finally:
        engine.dispose()


def _healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "docker/healthcheck.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_api_health_check_against_the_running_api(
    services: dict[str, dict[str, Any]], service_env: dict[str, str], api_url: str
) -> None:
    check = services["api"]["healthcheck"]["test"]
    url = check[4].replace("http://127.0.0.1:8000", api_url)
    assert _healthcheck(service_env, *check[3:4], url).returncode == 0
    down = _healthcheck(service_env, "http", f"http://127.0.0.1:{procs.free_port()}/healthz")
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_worker_health_check_pings_the_running_worker(
    services: dict[str, dict[str, Any]], service_env: dict[str, str], log_dir: Path
) -> None:
    worker = procs.start_worker(service_env, log_dir, queue="datagen", name="healthcheck")
    try:
        argv = worker.popen.args
        assert isinstance(argv, list)
        node = argv[argv.index("-n") + 1]
        check = services["datagen-worker"]["healthcheck"]["test"]
        ok = _healthcheck(service_env, *check[3:4], node)
        assert ok.returncode == 0, ok.stderr
        gone = _healthcheck(service_env, "celery", "nobody@%h", "--timeout", "1")
        assert gone.returncode == 1 and "did not answer" in gone.stderr
    finally:
        worker.stop()


def test_gpu_health_check_counts_a_live_training_lease(service_env: dict[str, str]) -> None:
    """A solo worker busy training cannot answer a ping; its live lease keeps it healthy."""
    engine = make_sync_engine(Settings(database_url=service_env["CHATPGT_DATABASE_URL"]))
    store = RunStore(engine)
    owner = f"{socket.gethostname()}:{os.getpid()}:healthcheck"
    silent = ("celery", f"silent-{uuid.uuid4().hex[:6]}@%h", "--or-training", "--timeout", "1")
    output_name = f"healthcheck-{uuid.uuid4().hex[:8]}"
    try:
        with Session(engine) as session:
            run = TrainingRun(kind="dpo", request={}, start_model={}, output_name=output_name)
            session.add(run)
            session.commit()
            run_id = run.id
        assert store.claim(run_id, owner, lease_s=300, max_attempts=1)
        busy = _healthcheck(service_env, *silent)
        assert busy.returncode == 0, busy.stderr

        assert store.heartbeat(run_id, owner, lease_s=-1) is False  # the lease ran out
        dead = _healthcheck(service_env, *silent)
        assert dead.returncode == 1 and "no training run holds a live lease" in dead.stderr
    finally:
        with Session(engine) as session:
            session.execute(delete(TrainingRun).where(TrainingRun.output_name == output_name))
            session.commit()
        engine.dispose()


# --- metrics (profile `metrics`) ---------------------------------------------------------------


def test_prometheus_scrapes_the_api_with_a_read_key(
    services: dict[str, dict[str, Any]], config: dict[str, Any]
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["depends_on"] == {"api": {"condition": "service_healthy"}}
    mounts = _mounts(prometheus)
    scrape_file = Path(mounts["/etc/prometheus/prometheus.yml"])
    assert scrape_file == ROOT / "docker" / "prometheus" / "prometheus.yml"
    scrape = yaml.safe_load(scrape_file.read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    # The api service's own port, by its service name.
    assert job["static_configs"] == [{"targets": ["api:8000"]}]
    assert _parse(services["api"]["command"])[2]["--port"] == "8000"
    # Under compose every client needs a key: Prometheus sends one from the mounted config.
    assert _env(services["api"])["CHATPGT_AUTH"] == "required"
    key_file = Path(job["authorization"]["credentials_file"])
    assert job["authorization"]["type"] == "Bearer"
    assert mounts[str(key_file.parent)] == str(ROOT / "docker" / "config")
    # A scrape answers within its own timeout: the API's source timeouts fit inside it.
    timeout_s = float(scrape["global"]["scrape_timeout"].rstrip("s"))
    assert timeout_s > Settings.model_fields["metrics_timeout_s"].default


def test_every_app_process_shares_one_metrics_directory(
    services: dict[str, dict[str, Any]], config: dict[str, Any]
) -> None:
    for name in LONG_RUNNING:
        directory = _env(services[name])["CHATPGT_METRICS_DIR"]
        assert _mounts(services[name]).get(directory) == "metrics", name
    # In memory (a new stack starts from zero) and writable by the images' app user.
    options = config["volumes"]["metrics"]["driver_opts"]
    assert options["type"] == "tmpfs"
    uid = re.search(r"ARG APP_UID=(\d+)", DOCKERFILE.read_text())
    assert uid and f"uid={uid.group(1)}" in options["o"]
