"""Container health checks for compose.yaml; exit status 0 means healthy.

    python docker/healthcheck.py http URL [--timeout S]
        GET URL answers 2xx (the API's /healthz runs a query, so the database is checked too).

    python docker/healthcheck.py celery NODE [--or-training] [--timeout S]
        The Celery worker NODE (``%h`` stands for this host's name, as in ``celery -n``) answers
        a ping through the broker. A ``--pool solo`` worker cannot answer while a task runs, so
        with ``--or-training`` a worker that holds a live lease on a running training run is
        healthy too: its lease is renewed every few seconds by the run's heartbeat thread
        (chatpgt.training.execution), which proves the process and its database link alive.

Imports nothing heavy (no torch): it runs every 30 s beside the real work.
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.error
import urllib.request


def check_http(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def node_name(pattern: str) -> str:
    return pattern.replace("%h", socket.gethostname())


def check_celery(node: str, timeout: float = 10.0) -> str | None:
    from workers.app import celery_app

    replies = celery_app.control.ping(destination=[node], timeout=timeout)
    if any(node in reply for reply in replies):
        return None
    return f"worker {node} did not answer a ping within {timeout:g} s"


def check_training_lease() -> str | None:
    """None when a running training run is held, with an unexpired lease, by a process here.

    Lease owners are ``host:pid:token`` (chatpgt.training.execution._execute)."""
    from chatpgt.settings import get_settings
    from chatpgt.training.execution import make_sync_engine
    from chatpgt.training.repository import RunStore

    engine = make_sync_engine(get_settings())
    try:
        held = RunStore(engine).holds_live_lease(socket.gethostname())
    finally:
        engine.dispose()
    return None if held else "and no training run holds a live lease here"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Container health checks (exit 0: healthy).")
    kinds = parser.add_subparsers(dest="kind", required=True)
    http = kinds.add_parser("http", help="GET URL answers 2xx")
    http.add_argument("url")
    http.add_argument("--timeout", type=float, default=5.0)
    celery = kinds.add_parser("celery", help="the worker NODE answers a ping")
    celery.add_argument("node", help="node name as given to `celery -n`; %%h is this host")
    celery.add_argument("--or-training", action="store_true")
    celery.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)

    if args.kind == "http":
        problem = check_http(args.url, args.timeout)
    else:
        problem = check_celery(node_name(args.node), args.timeout)
        if problem and args.or_training:
            busy = check_training_lease()
            problem = None if busy is None else f"{problem}, {busy}"
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
