"""Running one generation request in a gpu worker: claim it, generate with the local provider,
store the essays.

The model is loaded by :class:`chatpgt.providers.local.LocalProvider` once per worker process and
kept (``chatpgt.providers.local_models``): the first request to a model pays the load, the next
ones only generate. The ``n`` samples of a request go to the provider together, so they run as
one batched ``generate``. While the model writes, the essays so far are on the row (``results``
with ``finish_reason`` null, every ``STREAM_FLUSH_S``), for pollers and the event stream. Like a
training run, the request is leased: a redelivered task finds it busy or done, one whose worker
died is taken over, and after ``MAX_ATTEMPTS`` it fails. Every error becomes a failed request
with its reason; nothing is re-raised to Celery.

This module imports no torch: the provider imports it on the first request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from chatpgt.orchestration import service as leased
from chatpgt.orchestration.heartbeat import ThreadHeartbeat
from chatpgt.orchestration.leases import worker_identity
from chatpgt.orchestration.status import RunStatus
from chatpgt.providers.local import LocalProvider
from chatpgt.providers.types import ChatRequest, ChatResult, LocalOptions, ProviderError
from chatpgt.serving.repository import GenerationSnapshot, GenerationStore
from chatpgt.settings import Settings, get_settings
from chatpgt.training.execution import describe, sync_store

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# How often the essays so far are written to the row while the model writes.
STREAM_FLUSH_S = 1.0
GAVE_UP = "the worker stopped during each one (killed, or out of memory?)"
ORPHAN_QUEUED_AFTER_S = 600.0


def execute_generation(generation_id: int, settings: Settings | None = None) -> str:
    """Generate the essays of request ``generation_id``; returns what happened, for logs."""
    settings = settings or get_settings()
    with sync_store(GenerationStore, settings) as store:
        return _execute(store, generation_id, settings)


def _execute(store: GenerationStore, generation_id: int, settings: Settings) -> str:
    owner = worker_identity()
    claimed = leased.claim_sync(
        store, store.read, generation_id, owner, settings.job_lease_s, MAX_ATTEMPTS, GAVE_UP
    )
    if claimed != "claimed":
        return claimed
    snapshot = store.read(generation_id)
    assert snapshot is not None

    lost = False

    def beat() -> bool:
        nonlocal lost
        lost = store.heartbeat(generation_id, owner, settings.job_lease_s) is None
        return lost

    partial = _Partial(int(snapshot.request["n"]))

    def flush() -> bool:
        # The essays so far, on the row while it runs (GET .../generations/{id} and its event
        # stream show them); a write after the finish matches nothing (status is no longer
        # running).
        texts = partial.take()
        if texts is not None:
            results = [{"text": t, "finish_reason": None} for t in texts]
            if store.update(generation_id, owner, results=results) is None:
                return True
        return False

    with (
        ThreadHeartbeat(beat, interval_s=settings.job_heartbeat_s, name=f"gen-{generation_id}"),
        ThreadHeartbeat(flush, interval_s=STREAM_FLUSH_S, name=f"gen-{generation_id}-text"),
    ):
        try:
            results, timings = asyncio.run(_generate(snapshot, settings, partial.setter))
        except Exception as exc:
            log.exception("generation request %s failed", generation_id)
            reason = exc.message if isinstance(exc, ProviderError) else describe(exc)
            # A failed request keeps no half-written essay.
            if not store.finish(generation_id, owner, RunStatus.FAILED, error=reason, results=[]):
                return "lost"
            return RunStatus.FAILED
    if lost or not store.finish(
        generation_id, owner, RunStatus.SUCCEEDED, results=results, timings=timings
    ):
        return "lost"
    return RunStatus.SUCCEEDED


class _Partial:
    """The texts of ``n`` samples as they grow (set from the compute thread, taken by the
    flusher); ``take`` answers None when nothing changed since the last take."""

    def __init__(self, n: int) -> None:
        self.texts = [""] * n
        self.changed = False
        self.lock = threading.Lock()

    def setter(self, i: int) -> Callable[[str], None]:
        def set_text(text: str) -> None:
            with self.lock:
                self.texts[i] = text
                self.changed = True

        return set_text

    def take(self) -> list[str] | None:
        with self.lock:
            if not self.changed:
                return None
            self.changed = False
            return list(self.texts)


async def _generate(
    snapshot: GenerationSnapshot,
    settings: Settings,
    on_text: Callable[[int], Callable[[str], None]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    request = snapshot.request
    provider = LocalProvider("local", LocalOptions.from_settings(settings))
    try:
        started = time.perf_counter()
        loaded = await provider.preload(snapshot.model_path)
        loaded_at = time.perf_counter()
        calls = [
            provider.chat(
                ChatRequest(
                    provider="local",
                    model=snapshot.model_path,
                    messages=request["messages"],
                    temperature=request["temperature"],
                    top_p=request["top_p"],
                    max_tokens=request["max_new_tokens"],
                ),
                on_text=on_text(i) if on_text is not None else None,
            )
            for i in range(int(request["n"]))
        ]
        answers: list[ChatResult] = await asyncio.gather(*calls)
        done = time.perf_counter()
    finally:
        await provider.aclose()
    tokens = sum(a.completion_tokens for a in answers)
    generate_s = done - loaded_at
    results = [
        {
            "text": a.text,
            "finish_reason": a.finish_reason,
            "prompt_tokens": a.prompt_tokens,
            "completion_tokens": a.completion_tokens,
        }
        for a in answers
    ]
    timings = {
        "load_s": round(loaded_at - started, 3),
        "generate_s": round(generate_s, 3),
        "tokens_per_s": round(tokens / generate_s, 2) if generate_s > 0 else None,
        "device": loaded.device,
    }
    return results, timings


def recoverable_generations(settings: Settings | None = None) -> list[tuple[int, float]]:
    """Requests a starting gpu worker re-enqueues: running with an expired lease, or queued for
    over ``ORPHAN_QUEUED_AFTER_S``, each with the seconds to wait first."""
    with sync_store(GenerationStore, settings or get_settings()) as store:
        return store.orphaned_generations(ORPHAN_QUEUED_AFTER_S)
