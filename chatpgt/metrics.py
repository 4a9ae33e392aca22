"""In-process metrics: what only the process making provider requests can see.

Counts the database already holds (jobs, items, tokens, cost, training runs) are read at scrape
time instead (:mod:`chatpgt.observability.service`); this module keeps the rest, recorded where
a provider request completes: request latency, retries and HTTP 429 answers.

Multiprocess mode: with ``CHATPGT_METRICS_DIR`` set, :func:`configure` (called once per process
tree, before any sample is recorded: the API app, the Celery app) points prometheus-client at
that directory, so every process (uvicorn workers, Celery's forked pool processes) writes its
samples to files there and the API's ``GET /metrics`` sums them all. Files are named
``<kind>_<hostname>-<pid>.db``: containers sharing one volume never write the same file. A
starting process removes the files of processes of its own host that are no longer alive (its
own earlier run after a restart, its dead pool children); others are left to their hosts.

This module imports nothing of chatpgt, so that the provider client can call its hooks from the
floor it lives on.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

# Provider answers take from milliseconds (a cached judge verdict) to minutes (a long essay).
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0)
# prometheus-client reads this variable wherever it opens a sample file.
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class _Instruments:
    latency: Histogram
    retries: Counter
    rate_limited: Counter
    registry: CollectorRegistry  # the in-process registry (used when not in multiprocess mode)
    latency_children: dict[tuple[str, str, int | None], Histogram] = field(default_factory=dict)


_lock = threading.Lock()
_instruments: _Instruments | None = None
_directory: Path | None = None


_host = socket.gethostname()


def _process_id() -> str:
    # Called on every sample (prometheus-client's fork check): no system call but getpid.
    return f"{_host}-{os.getpid()}"


def configure(directory: Path | None) -> None:
    """Record samples in ``directory`` (multiprocess mode); None keeps them in this process.

    Call it before the first sample, in the process that forks the others (their samples go to
    files of their own after the fork). A second call with the same directory does nothing.
    Creates the directory and removes the sample files of dead processes of this host.
    """
    global _directory, _instruments
    with _lock:
        if directory is None or directory == _directory:
            return
        directory.mkdir(parents=True, exist_ok=True)
        prune_dead_processes(directory)
        os.environ[_MULTIPROC_ENV] = str(directory)
        values.ValueClass = values.MultiProcessValue(_process_id)
        _directory = directory
        _instruments = None  # made again, now backed by files


def prune_dead_processes(directory: Path) -> list[Path]:
    """Remove sample files written by processes of this host that no longer run; returns them.

    Files of other hosts (containers on a shared volume) are not judged: their pids mean nothing
    here. A removed file's counters restart from 0 with the process, which Prometheus' ``rate()``
    reads as a counter reset.
    """
    host = _host
    removed = []
    for path in directory.glob(f"*_{host}-*.db"):
        pid_text = path.stem.rsplit("-", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _get() -> _Instruments:
    global _instruments
    found = _instruments
    if found is not None:
        return found
    with _lock:
        if _instruments is None:
            registry = CollectorRegistry(auto_describe=True)
            _instruments = _Instruments(
                latency=Histogram(
                    "chatpgt_provider_request_duration_seconds",
                    "Seconds one HTTP attempt to a provider took, from sending to the end of "
                    "the answer's body (limiter waits and backoff excluded), by HTTP status "
                    "('error' for a transport error or timeout).",
                    ["provider", "model", "status"],
                    buckets=LATENCY_BUCKETS_S,
                    registry=registry,
                ),
                retries=Counter(
                    "chatpgt_provider_retries",
                    "Provider attempts that were retried, by the reason (HTTP status, "
                    "'error' for a transport error or timeout, 'malformed' for a broken 200).",
                    ["provider", "reason"],
                    registry=registry,
                ),
                rate_limited=Counter(
                    "chatpgt_provider_rate_limited",
                    "HTTP 429 answers from a provider.",
                    ["provider"],
                    registry=registry,
                ),
                registry=registry,
            )
        return _instruments


def _status_label(status: int | None) -> str:
    return "error" if status is None else str(status)


def observe_provider_attempt(provider: str, model: str, status: int | None, seconds: float) -> None:
    """Hook: one HTTP attempt to ``provider`` ended after ``seconds``, with HTTP ``status``
    (None: a transport error or timeout). Called by the provider client for every attempt."""
    instruments = _get()
    key = (provider, model, status)
    # The labelled child, looked up once per label set: labels() costs more than observe().
    child = instruments.latency_children.get(key)
    if child is None:
        child = instruments.latency.labels(provider, model, _status_label(status))
        instruments.latency_children[key] = child
    child.observe(seconds)
    if status == 429:
        instruments.rate_limited.labels(provider).inc()


def count_provider_retry(provider: str, status: int | None) -> None:
    """Hook: the provider client is about to retry a request whose last attempt ended with HTTP
    ``status`` (None: transport error or timeout; 200: a malformed body)."""
    reason = "malformed" if status == 200 else _status_label(status)
    _get().retries.labels(provider, reason).inc()


def collect() -> Iterable[Metric]:
    """The samples of every process (multiprocess mode) or of this one."""
    directory = _directory
    if directory is not None:
        # accumulate=True: histogram buckets are summed into the cumulative wire format.
        files = [str(p) for p in directory.glob("*.db")]
        return MultiProcessCollector.merge(files, accumulate=True)
    return _get().registry.collect()
