"""Reading the next batch of a stream while the caller works on the last one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def read_ahead(source: AsyncIterator[T]) -> AsyncIterator[T]:
    """``source``'s items in order, each next one already being read (on a task of its own)
    while the caller handles the current one: an export's next batch of rows travels from
    Postgres while the last is encoded and sent. At most one item is read ahead, so memory
    stays at two items. ``source`` is never read by two tasks at once, and is closed when this
    iterator is (after the read in flight, if any, has been cancelled and has ended)."""

    async def next_item() -> T:
        return await anext(source)

    pending: asyncio.Task[T] = asyncio.ensure_future(next_item())
    try:
        while True:
            try:
                item = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(next_item())
            yield item
    finally:
        if not pending.done():
            pending.cancel()
            # A source cannot be closed while a read of it runs. If this wait is cancelled
            # too (the caller's cancel scope), the source is left to its finaliser.
            await asyncio.wait({pending})
        if not pending.cancelled():
            pending.exception()  # seen: an error of a read nobody waits for is not logged
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
