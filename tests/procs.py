"""Real processes for tests: the API under uvicorn, Celery workers, the fake provider server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose output goes to a log file (read it when a test fails)."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            self.popen.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        self._log.close()


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log()[-4000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} did not answer {url}:\n{proc.log()[-4000:]}")


def wait_log(proc: Proc, needle: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in proc.log():
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log()[-4000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"{proc.name} never logged {needle!r}:\n{proc.log()[-4000:]}")


def start_api(env: Mapping[str, str], log_dir: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        "api",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env,
        log_dir,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", proc)
    return proc, base


def start_worker(
    env: Mapping[str, str],
    log_dir: Path,
    queue: str = "datagen",
    concurrency: int = 1,
    name: str | None = None,
) -> Proc:
    pool = ["--pool", "solo"] if queue == "gpu" else ["--pool", "prefork", "-c", str(concurrency)]
    hostname = f"{name or queue}-{time.monotonic_ns()}@%h"
    proc = Proc(
        f"worker-{queue}",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            queue,
            "-n",
            hostname,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *pool,
        ],
        env,
        log_dir,
    )
    wait_log(proc, "ready.")
    return proc


def start_beat(env: Mapping[str, str], log_dir: Path, name: str = "beat") -> Proc:
    """Celery beat, sending the periodic tasks of workers/app.py (its schedule file in
    ``log_dir``)."""
    proc = Proc(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "beat",
            "--loglevel",
            "INFO",
            "-s",
            str(log_dir / f"{name}-{time.monotonic_ns()}.schedule"),
        ],
        env,
        log_dir,
    )
    wait_log(proc, "beat: Starting")
    return proc


def start_fake_provider(env: Mapping[str, str], log_dir: Path, port: int, *extra: str) -> Proc:
    proc = Proc(
        "fake-provider",
        [
            sys.executable,
            "-m",
            "chatpgt.testing.fake_openai",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        env,
        log_dir,
    )
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
    return proc
