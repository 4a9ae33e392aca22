"""A job's spending limit, shared by all its concurrent requests."""

from __future__ import annotations

import asyncio
from decimal import Decimal


class Budget:
    """Reserve an upper-bound cost before each request; settle with the real cost after it.

    A request is issued only if spent + reserved + its estimate stays within the limit. When it
    would not, the budget waits for in-flight requests to settle (they usually cost less than
    reserved) and declares itself exhausted only if the request still does not fit.
    """

    def __init__(self, limit: Decimal | None, spent: Decimal) -> None:
        self.limit = limit
        self.spent = spent
        self.reserved = Decimal(0)
        self.exhausted = False
        self._changed = asyncio.Condition()

    async def reserve(self, estimate: Decimal) -> bool:
        if self.limit is None:
            return True
        async with self._changed:
            while not self.exhausted:
                if self.spent + self.reserved + estimate <= self.limit:
                    self.reserved += estimate
                    return True
                if self.reserved == 0:
                    self.exhausted = True
                    break
                await self._changed.wait()
            return False

    async def settle(self, estimate: Decimal, actual: Decimal) -> None:
        self.spent += actual
        if self.limit is None:
            return
        async with self._changed:
            self.reserved -= estimate
            self._changed.notify_all()

    def commit(self, estimate: Decimal) -> bool:
        """Count ``estimate`` as spent now if it fits (a request sent in a provider batch,
        whose answer comes in a later run): True when it did. Never waits: a batch's money is
        not settled in this run, so waiting for it would wait forever."""
        if self.limit is not None and self.spent + self.reserved + estimate > self.limit:
            self.exhausted = True
            return False
        self.spent += estimate
        return True
