"""The response cache: a provider's answer is kept under the hash of everything that decides
it, and a request with the same hash is answered from the database at $0, in any job.

The key (:func:`cache_key`) is the SHA-256 of the provider's endpoint (its kind and base URL,
not its name, so two names for one server share answers), the model, the messages, the sampling
parameters (temperature, top_p, max_tokens, JSON mode, ``seed`` and any other extra field) and
the request's ``sample_index`` (a generator's second sample is a different answer from its
first; a judge's parse retry is a different answer from its first try). Nothing else: not the
job, not the topic id, not the provider's prices.

What is cached: answers with text, from HTTP providers. Not cached: errors, empty answers,
verdicts asked for as JSON that do not parse (asked again, they may),
``local`` providers (the model behind a local name is a directory that training may replace),
and the ``ab_probability`` judge's probability calls. A job with ``"cache": false`` neither
reads nor writes it.

New answers are written by the flusher in the same transaction as the results of the items
that bought them, so an answer the job has on disk is in the cache too.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository as repo
from chatpgt.datagen.judging import JudgeParseError, parse_verdict
from chatpgt.orchestration.retry import until_reachable
from chatpgt.providers.types import ChatRequest, ChatResult

if TYPE_CHECKING:
    from chatpgt.settings import ProviderConfig

# Keys asked for in one query when a job's known requests are checked up front.
PREFETCH_CHUNK = 1000


def cache_key(config: ProviderConfig, req: ChatRequest) -> str | None:
    """The request's key, or None when this provider's answers are not cached (``local``)."""
    if config.kind == "local":
        return None
    payload = {
        "endpoint": f"{config.kind}:{config.base_url.rstrip('/')}",
        "model": req.model,
        "messages": req.messages,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
        "json_mode": bool(req.json_mode and config.supports_json_mode),
        "extra": req.extra,
        "sample_index": req.sample_index,
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResponseCache:
    """A job's view of the response cache: :meth:`get` answers a request from it (or says it
    cannot), :meth:`entry` makes a new answer's row for the flusher's next batch.

    ``prefetch`` reads which of many keys are cached in a few queries, so that a job's new
    requests (most of a new job) cost no lookup each; the answers themselves are read when asked
    for (the lookups of a moment in one query), so a large job never holds them all in memory.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession] | None,
        configs: Mapping[str, ProviderConfig],
        *,
        enabled: bool,
        label: str = "",
    ) -> None:
        self.sm = sessionmaker
        self.configs = configs
        self.enabled = enabled and sessionmaker is not None
        self.label = label
        self._known: set[str] | None = None  # keys prefetched: those cached
        self._asked: set[str] = set()  # keys prefetched: all of them
        self._pending: dict[str, asyncio.Future[Any]] = {}  # lookups not read yet
        self._reader: asyncio.Task[None] | None = None

    def key(self, req: ChatRequest) -> str | None:
        if not self.enabled:
            return None
        config = self.configs.get(req.provider)
        return cache_key(config, req) if config is not None else None

    async def prefetch(self, requests: Iterable[ChatRequest]) -> int:
        """Find out which of these requests are cached; returns how many are."""
        keys = [k for k in map(self.key, requests) if k is not None]
        if not keys or self.sm is None:
            return 0
        sm = self.sm
        found: set[str] = set()
        for i in range(0, len(keys), PREFETCH_CHUNK):
            chunk = keys[i : i + PREFETCH_CHUNK]

            async def read(chunk: list[str] = chunk) -> set[str]:
                async with sm() as s:
                    return await repo.cached_keys(s, chunk)

            found |= await until_reachable(
                read, label=self.label, what="cache lookup", first_delay_s=0.05
            )
        self._known = (self._known or set()) | found
        self._asked.update(keys)
        return len(found)

    async def get(self, key: str) -> ChatResult | None:
        """The cached answer under ``key`` as a result that cost nothing, or None.

        Lookups made while one is being read are read together by the next query (up to
        PREFETCH_CHUNK keys each), so a hundred lanes asking at once cost one round trip, not
        a hundred."""
        if self.sm is None or (key in self._asked and key not in (self._known or ())):
            return None
        started = time.perf_counter()
        waiting = self._pending.get(key)
        if waiting is None:
            waiting = asyncio.get_running_loop().create_future()
            self._pending[key] = waiting
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_pending())
        row = await asyncio.shield(waiting)
        if row is None:
            return None
        return ChatResult(
            text=row.text,
            prompt_tokens=0,
            completion_tokens=0,
            cost_usd=Decimal(0),
            latency_ms=int((time.perf_counter() - started) * 1000),
            finish_reason=row.finish_reason,
            attempts=0,
            logprobs=row.logprobs,
            cache_hit=True,
            saved_usd=Decimal(row.cost_usd),
        )

    async def _read_pending(self) -> None:
        """Read the lookups asked for, in chunks, until none is left."""
        sm = self.sm
        assert sm is not None
        while self._pending:
            await asyncio.sleep(0)  # let the lookups of this moment join the query
            keys = list(self._pending)[:PREFETCH_CHUNK]
            futures = [self._pending.pop(k) for k in keys]

            async def read(keys: list[str] = keys) -> dict[str, Any]:
                async with sm() as s:
                    return await repo.cached_responses(s, keys)

            try:
                rows = await until_reachable(
                    read, label=self.label, what="cache lookup", first_delay_s=0.05
                )
            except Exception as exc:  # the waiting lookups raise it (their request fails)
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for k, f in zip(keys, futures, strict=True):
                if not f.done():
                    f.set_result(rows.get(k))

    @staticmethod
    def entry(key: str, req: ChatRequest, result: ChatResult) -> dict[str, Any] | None:
        """The cache row of a new answer, for the flusher; None for an answer not worth keeping:
        served from the cache already, empty (that failed its item), or asked for as JSON (a
        judge's verdict) and not a readable verdict — kept, it would fail every job that asks
        again the same way, where asking the provider again may well succeed."""
        if result.cache_hit or not result.text.strip():
            return None
        if req.json_mode:
            try:
                parse_verdict(result.text)
            except JudgeParseError:
                return None
        return {
            "key": key,
            "provider": req.provider,
            "model": req.model,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "cost_usd": result.cost_usd,
            "logprobs": result.logprobs,
        }
