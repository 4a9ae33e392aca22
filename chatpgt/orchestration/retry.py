"""Waiting out a database outage: a unit of database work is run again, with backoff, while the
database is unreachable (``chatpgt.db.session.is_unavailable``), and any other error propagates.

One warning when the database goes away and one line when it is back, not a traceback a try.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from chatpgt.db.session import is_unavailable

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# The longest wait between two tries while the database is unreachable.
DB_RETRY_MAX_S = 1.0


async def to_the_end(work: Awaitable[_T]) -> _T:
    """Await a unit of database work to its end even when the caller is cancelled (the cancel
    is re-raised afterwards). A transaction cut off mid-statement is rolled back at once by
    Postgres, but an aiosqlite connection cut off that way can keep SQLite's write lock and
    stall every other writer."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return text.splitlines()[0][:200] if text else type(exc).__name__


async def until_reachable(
    work: Callable[[], Awaitable[_T]],
    *,
    label: str,
    what: str,
    first_delay_s: float,
    max_delay_s: float = DB_RETRY_MAX_S,
) -> _T:
    """Run ``work()`` until it goes through, waiting ``first_delay_s``, then twice as long each
    try (never more than ``max_delay_s``) while the database is unreachable. ``work`` must be
    safe to replay: a transaction cut off at its commit may have committed. Each try runs to
    its end even when the caller is cancelled (:func:`to_the_end`). ``label`` names the unit of
    work in the log ("job 7"), ``what`` the step ("flush")."""
    since: float | None = None

    def went_away(state: RetryCallState) -> None:
        nonlocal since
        if since is None:
            since = time.monotonic()
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: database unreachable (%s: %s); retrying until it is back",
                label,
                what,
                _first_line(exc),
            )

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_unavailable),
        wait=wait_exponential(multiplier=first_delay_s, max=max_delay_s),
        before_sleep=went_away,
        sleep=asyncio.sleep,
        reraise=True,
    )

    async def attempt() -> _T:
        return await to_the_end(work())

    result: _T = await retrying(attempt)
    if since is not None:
        log.warning("%s: database back after %.1f s (%s)", label, time.monotonic() - since, what)
    return result
