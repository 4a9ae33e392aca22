"""``GET /metrics``: the Prometheus text exposition of a deployment, built at scrape time.

Three sources, each bounded by ``CHATPGT_METRICS_TIMEOUT_S``:

- the database (:mod:`chatpgt.observability.repository`): jobs, items, tokens, cost, training
  runs and steps, read from the rows (consistent across processes, nothing to instrument);
- the broker (:mod:`chatpgt.observability.queues`): tasks waiting per queue;
- the processes' own samples (:mod:`chatpgt.metrics`): provider latency, retries
  and 429s, summed over every process in multiprocess mode.

A source that fails or times out is left out and reported by ``chatpgt_metrics_source_up 0``;
the scrape itself still answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt import metrics
from chatpgt.observability.queues import queue_depths
from chatpgt.observability.repository import DatabaseCounts, read_counts

CONTENT_TYPE = CONTENT_TYPE_LATEST
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Snapshot:
    """What one scrape read; sources that failed are None."""

    database: DatabaseCounts | None
    queues: dict[str, int] | None
    seconds: dict[str, float]


class SnapshotCollector(Collector):
    """A prometheus-client collector over one :class:`Snapshot` plus the processes' samples."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        up = GaugeMetricFamily(
            "chatpgt_metrics_source_up",
            "1 when the scrape could read the source (database, broker), else 0.",
            labels=["source"],
        )
        took = GaugeMetricFamily(
            "chatpgt_metrics_source_duration_seconds",
            "Seconds the scrape spent reading each source.",
            labels=["source"],
        )
        for source, ok in (("database", snap.database), ("broker", snap.queues)):
            up.add_metric([source], 0.0 if ok is None else 1.0)
            took.add_metric([source], snap.seconds.get(source, 0.0))
        yield up
        yield took
        if snap.database is not None:
            yield from _database_families(snap.database)
        if snap.queues is not None:
            depth = GaugeMetricFamily(
                "chatpgt_queue_depth",
                "Tasks waiting in a broker queue (not yet taken by a worker).",
                labels=["queue"],
            )
            for name, n in sorted(snap.queues.items()):
                depth.add_metric([name], float(n))
            yield depth
        yield from metrics.collect()


def _database_families(db: DatabaseCounts) -> Iterable[Metric]:
    jobs = GaugeMetricFamily("chatpgt_datagen_jobs", "Datagen jobs by status.", labels=["status"])
    for status, n in sorted(db.jobs.items()):
        jobs.add_metric([status], float(n))
    yield jobs
    item_labels = ["stage", "provider", "model"]
    items = GaugeMetricFamily(
        "chatpgt_datagen_items",
        "Generations (stage=generation) and judgments (stage=judgment) by provider, model and "
        "row status (pending, succeeded, failed, skipped, cancelled).",
        labels=[*item_labels, "status"],
    )
    tokens = CounterMetricFamily(
        "chatpgt_datagen_tokens",
        "Tokens spent by generations and judgments, by kind (prompt, completion).",
        labels=[*item_labels, "kind"],
    )
    cost = CounterMetricFamily(
        "chatpgt_datagen_cost_usd",
        "US dollars spent on generations and judgments, at the configured prices.",
        labels=item_labels,
    )
    spent: dict[tuple[str, str, str], list[float]] = {}
    for g in db.items:
        key = (g.stage, g.provider, g.model)
        items.add_metric([*key, g.status], float(g.count))
        total = spent.setdefault(key, [0.0, 0.0, 0.0])
        total[0] += g.prompt_tokens
        total[1] += g.completion_tokens
        total[2] += float(g.cost_usd)
    for key, (prompt, completion, usd) in sorted(spent.items()):
        tokens.add_metric([*key, "prompt"], prompt)
        tokens.add_metric([*key, "completion"], completion)
        cost.add_metric(list(key), usd)
    yield items
    yield tokens
    yield cost
    runs = GaugeMetricFamily(
        "chatpgt_training_runs",
        "Training runs by kind (sft, dpo) and status.",
        labels=["kind", "status"],
    )
    steps = CounterMetricFamily(
        "chatpgt_training_steps",
        "Optimizer steps the training runs of a kind have reached, summed over runs.",
        labels=["kind"],
    )
    by_kind: dict[str, int] = {}
    for r in db.runs:
        runs.add_metric([r.kind, r.status], float(r.count))
        by_kind[r.kind] = by_kind.get(r.kind, 0) + r.steps
    for kind, n in sorted(by_kind.items()):
        steps.add_metric([kind], float(n))
    yield runs
    yield steps


async def _timed(
    source: str, seconds: dict[str, float], timeout_s: float, make: Callable[[], Awaitable[T]]
) -> T | None:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            return await make()
    except Exception as exc:  # a metrics scrape reports a source down; it never fails
        log.warning("metrics: could not read the %s: %s", source, type(exc).__name__)
        return None
    finally:
        seconds[source] = time.perf_counter() - started


async def scrape(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    broker_url: str,
    queues: Sequence[str],
    broker_key_prefix: str = "",
    timeout_s: float = 5.0,
) -> bytes:
    """The exposition text of one scrape: database counts, queue depths, process samples."""
    seconds: dict[str, float] = {}

    async def database() -> DatabaseCounts:
        async with sessionmaker() as session:
            return await read_counts(session)

    def broker() -> dict[str, int]:
        return queue_depths(broker_url, queues, key_prefix=broker_key_prefix, timeout_s=timeout_s)

    db, depths = await asyncio.gather(
        _timed("database", seconds, timeout_s, database),
        _timed("broker", seconds, timeout_s, lambda: asyncio.to_thread(broker)),
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(Snapshot(db, depths, seconds)))
    return generate_latest(registry)
