"""read_ahead: the next item is read while the caller handles the current one, one at most."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatpgt.db.read_ahead import read_ahead


class Source:
    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.started = 0  # reads begun
        self.reading = 0  # reads running now
        self.most_at_once = 0
        self.closed = False

    async def items(self) -> AsyncIterator[int]:
        try:
            for i in range(self.n):
                self.started += 1
                self.reading += 1
                self.most_at_once = max(self.most_at_once, self.reading)
                await asyncio.sleep(0.01)
                self.reading -= 1
                if i == self.fail_at:
                    raise ValueError("read failed")
                yield i
        finally:
            self.closed = True


async def test_items_in_order_with_the_next_read_while_the_caller_works() -> None:
    source = Source(5)
    seen = []
    async for item in read_ahead(source.items()):
        # the caller is busy with ``item``: the next read has already begun
        await asyncio.sleep(0.02)
        assert source.started == min(item + 2, 5)
        seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert source.most_at_once == 1 and source.closed


async def test_closing_early_ends_the_read_in_flight_and_closes_the_source() -> None:
    source = Source(100)
    stream = read_ahead(source.items())
    assert await anext(stream) == 0
    await asyncio.sleep(0)  # the read of item 1 is running
    await stream.aclose()  # type: ignore[attr-defined]
    assert source.closed and source.reading == 1  # cancelled mid-read, never resumed
    assert source.started == 2


async def test_a_failed_read_reaches_the_caller_in_its_place() -> None:
    source = Source(5, fail_at=2)
    seen = []
    with pytest.raises(ValueError, match="read failed"):
        async for item in read_ahead(source.items()):
            seen.append(item)
    assert seen == [0, 1] and source.closed
