"""Renewing a lease while the work runs: an asyncio task (datagen), or a thread for work that
blocks its own thread (training). Each beat calls ``renew``; ``on_beat`` gets what it returned
and says whether to stop beating (the lease was lost, or a cancel was seen)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from chatpgt.orchestration.retry import until_reachable

log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def heartbeat(
    renew: Callable[[], Awaitable[_T]],
    on_beat: Callable[[_T], bool],
    *,
    interval_s: float,
    label: str,
) -> None:
    """Every ``interval_s``, ``renew()`` the lease and pass the result to ``on_beat``; return
    when it answers True. While the database is unreachable a renewal waits it out
    (:func:`~chatpgt.orchestration.retry.until_reachable`) and the lease may run out meanwhile:
    the first renewal that goes through tells whether the work is still ours."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            result = await until_reachable(
                renew, label=label, what="heartbeat", first_delay_s=interval_s
            )
        except Exception:
            log.exception("%s: heartbeat failed; retrying", label)
            continue
        if on_beat(result):
            return


class ThreadHeartbeat:
    """Calls ``beat()`` every ``interval_s`` from a daemon thread while the main thread is busy
    (a training loop), until ``beat`` answers True or the context exits. A beat that raises is
    logged and the next one retries (the lease has slack)."""

    def __init__(self, beat: Callable[[], bool], *, interval_s: float, name: str) -> None:
        self.beat = beat
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> ThreadHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.beat():
                    return
            except Exception:
                log.warning("%s: heartbeat failed", self._thread.name, exc_info=True)
