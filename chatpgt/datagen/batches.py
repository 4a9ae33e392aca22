"""A job's provider batches: requests of generators and judges in ``"mode": "batch"`` go to the
provider's Batch API instead of online, at its batch price, and the job waits for them without
holding a worker.

One run of a job (:class:`JobBatches`, driven by the runner and the executor):

1. :meth:`JobBatches.refresh` looks at every open batch of the job: one still ``submitting``
   (a worker died after writing it) is finished — a stored file whose batch id was not stored is
   looked for at the provider first (:meth:`BatchClient.find`), so the provider sees one batch
   per chunk —; one at the provider is retrieved, and once finished its output and error files
   are stored in ``batch_results`` and the batch is ``done``, in one transaction. Then it loads
   every stored answer of the job.
2. The executor asks as online, but a batch request (``ChatRequest.batch``) is answered from
   the stored answers (:meth:`lookup`), or is waiting in an open batch, or is collected for a
   new batch (:meth:`collect`): the item is left as it is (``waiting_for_batch``) and the topic
   waits. A request that failed inside a batch is collected again, up to ``BATCH_ITEM_TRIES``
   batches, then fails with the provider's reason; one the provider refused outright (the
   file was rejected) fails at once with the provider's message; one whose batch expired or was
   cancelled without an answer is collected again.
3. :meth:`submit` sends what was collected, per provider, in chunks within the provider's
   limits (``batch_max_requests``, ``batch_max_bytes``). Each chunk's row is written (with its
   keys and the budget it holds) before its file is uploaded, the file id before the batch is
   created, the batch id as soon as the provider answers.
4. The runner parks the job while anything is waiting (the lease held free for
   ``CHATPGT_BATCH_POLL_S``); a later run starts again at 1.

Keys are the response cache's (:func:`chatpgt.datagen.cache.cache_key`), used as the batch's
``custom_id``: the same request in a later run has the same key, whatever the job's cache
setting.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.datagen import repository as repo
from chatpgt.datagen.cache import cache_key
from chatpgt.db.session import transaction
from chatpgt.providers.answers import (
    MalformedBody,
    parse_anthropic_message,
    parse_completion,
    server_words,
)
from chatpgt.providers.batches import FINISHED, BatchClient
from chatpgt.providers.client import ProviderPool, estimate_prompt_tokens
from chatpgt.providers.types import ChatRequest, ChatResult, ProviderError
from chatpgt.redact import redact

log = logging.getLogger(__name__)

# Anthropic error types inside a message batch worth another batch.
_ANTHROPIC_RETRYABLE = frozenset({"api_error", "overloaded_error", "rate_limit_error"})
# How many batches one request may be asked in when it fails inside them.
BATCH_ITEM_TRIES = 2


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    text: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    online_cost_usd: Decimal
    error: str | None
    retryable: bool


class JobBatches:
    def __init__(
        self, job_id: int, sessionmaker: async_sessionmaker[AsyncSession], pool: ProviderPool
    ) -> None:
        self.job_id = job_id
        self.sm = sessionmaker
        self.pool = pool
        self.answers: dict[str, StoredAnswer] = {}
        self.failures: Counter[str] = Counter()
        self.outstanding: set[str] = set()
        self.reserved = Decimal(0)
        self.collected: dict[str, tuple[ChatRequest, Decimal]] = {}

    @property
    def waiting(self) -> bool:
        """Whether anything of the job is, or is about to be, in a provider batch."""
        return bool(self.outstanding or self.collected)

    def key(self, req: ChatRequest) -> str:
        key = cache_key(self.pool.configs[req.provider], req)
        assert key is not None  # batch mode is refused at submit for local providers
        return key

    def estimate(self, req: ChatRequest) -> Decimal:
        """An upper bound on the request's cost at the batch price."""
        completion = req.max_tokens or 4096
        return self.pool.batch_cost(
            req.provider, req.model, estimate_prompt_tokens(req.messages), completion
        )

    # --- 1. what the provider has done ------------------------------------------------------

    async def refresh(self) -> None:
        async with self.sm() as s:
            batches = await repo.open_batches(s, self.job_id)
            s.expunge_all()
        for b in batches:
            try:
                await self._advance(b)
            except ProviderError as exc:
                # The provider is not reachable now: the batch stays open, looked at next time.
                log.warning("job %s: batch %s: %s", self.job_id, b.id, exc.message)
        async with self.sm() as s:
            still_open = await repo.open_batches(s, self.job_id)
            results = await repo.batch_results(s, self.job_id)
        self.outstanding = {k for b in still_open for k in b.keys}
        self.reserved = sum((b.reserved_usd for b in still_open), Decimal(0))
        self.answers.clear()
        self.failures.clear()
        for r in results:  # oldest batch first: a later answer wins, an answer beats errors
            answer = StoredAnswer(
                r.text,
                r.finish_reason,
                r.prompt_tokens,
                r.completion_tokens,
                Decimal(r.cost_usd),
                Decimal(r.online_cost_usd),
                r.error,
                r.retryable,
            )
            if r.error is not None:
                self.failures[r.key] += 1
                if self.answers.get(r.key) is None or self.answers[r.key].error is not None:
                    self.answers[r.key] = answer
            else:
                self.answers[r.key] = answer

    async def _advance(self, b: Any) -> None:
        cfg = self.pool.configs[b.provider]
        async with BatchClient(cfg) as client:
            if b.remote_batch_id is None:
                if b.remote_file_id is None:
                    # Died before the upload was stored: nothing reached the provider as a
                    # batch; its requests are collected again.
                    await self._update(b.id, status="abandoned")
                    return
                found = await client.find(b.remote_file_id)
                if found is None:
                    found = await client.create(b.remote_file_id, self._metadata(b.id))
                await self._update(
                    b.id,
                    remote_batch_id=found["id"],
                    status=found["status"],
                    remote_status=found["status"],
                    counts=found.get("request_counts") or {},
                )
                b.remote_batch_id = found["id"]
            anthropic = cfg.kind == "anthropic"
            if anthropic:
                remote = await client.retrieve_messages(b.remote_batch_id)
            else:
                remote = await client.retrieve(b.remote_batch_id)
            status = remote["status"]
            if status not in FINISHED:
                await self._update(
                    b.id,
                    status=status,
                    remote_status=status,
                    counts=remote.get("request_counts") or {},
                )
                return
            rows = []
            if anthropic and remote.get("results_url"):
                rows += self._anthropic_results(b, await client.download_url(remote["results_url"]))
            for file_field in ("output_file_id", "error_file_id"):
                file_id = remote.get(file_field)
                if file_id:
                    rows += self._results(b, await client.download(file_id))
            if status == "failed":
                reason = _batch_error(remote)
                answered = {r["key"] for r in rows}
                rows += [
                    _error_row(b.id, key, f"the provider rejected the batch: {reason}", False)
                    for key in b.keys
                    if key not in answered
                ]
        async with transaction(self.sm) as s:
            await repo.insert_batch_results(s, rows)
            await repo.update_batch(
                s,
                b.id,
                status="done",
                remote_status=status,
                counts=remote.get("request_counts") or {},
                error=_batch_error(remote) if status == "failed" else None,
            )

    def _results(self, b: Any, data: bytes) -> list[dict[str, Any]]:
        rows = []
        keys = set(b.keys)
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                key = item["custom_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if key not in keys:
                continue
            response = item.get("response") or {}
            status = response.get("status_code")
            body = response.get("body")
            if status == 200 and isinstance(body, dict):
                try:
                    data_, choice, text = parse_completion(orjson.dumps(body))
                except MalformedBody as exc:
                    rows.append(_error_row(b.id, key, f"malformed answer: {exc.reason}", True))
                    continue
                model = str(data_.get("model") or "")
                usage = data_.get("usage") or {}
                pt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
                ct = usage.get("completion_tokens") if isinstance(usage, dict) else None
                pt = pt if isinstance(pt, int) else 0
                ct = ct if isinstance(ct, int) else (len(text) + 3) // 4
                rows.append(self._answer_row(b, key, text, choice, model, pt, ct))
            else:
                detail = server_words(orjson.dumps(body)) if isinstance(body, dict) else ""
                error = item.get("error")
                if not detail and isinstance(error, dict):
                    detail = str(error.get("message") or "")
                message = f"HTTP {status} inside the batch" + (f": {detail}" if detail else "")
                retryable = status is None or status in (408, 429) or status >= 500
                rows.append(_error_row(b.id, key, message, retryable))
        return rows

    def _answer_row(
        self, b: Any, key: str, text: str, choice: dict[str, Any], model: str, pt: int, ct: int
    ) -> dict[str, Any]:
        """The ``batch_results`` row of one answer, priced at the batch and the online rate."""
        return {
            "batch_id": b.id,
            "key": key,
            "text": text,
            "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": pt,
            "completion_tokens": ct,
            "cost_usd": self._price(b.provider, model, pt, ct, batch=True),
            "online_cost_usd": self._price(b.provider, model, pt, ct, batch=False),
            "error": None,
            "retryable": False,
        }

    def _anthropic_results(self, b: Any, data: bytes) -> list[dict[str, Any]]:
        """Rows of a message batch's results: ``succeeded`` answers, ``errored`` errors (a
        server-side error type is worth another batch); ``canceled``/``expired`` ones are
        left out, so they are asked again."""
        rows = []
        keys = set(b.keys)
        for line in data.splitlines():
            try:
                item = orjson.loads(line)
                key, result = item["custom_id"], item["result"]
                kind = result["type"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if key not in keys:
                continue
            if kind == "succeeded":
                try:
                    data_, choice, text = parse_anthropic_message(orjson.dumps(result["message"]))
                except (MalformedBody, KeyError) as exc:
                    reason = exc.reason if isinstance(exc, MalformedBody) else "no message"
                    rows.append(_error_row(b.id, key, f"malformed answer: {reason}", True))
                    continue
                usage = data_.get("usage") or {}
                pt = int(usage.get("prompt_tokens") or 0)
                ct = int(usage.get("completion_tokens") or (len(text) + 3) // 4)
                model = str(data_.get("model") or "")
                rows.append(self._answer_row(b, key, text, choice, model, pt, ct))
            elif kind == "errored":
                error = (result.get("error") or {}).get("error") or {}
                error_type = str(error.get("type") or "error")
                message = f"{error_type} inside the batch: {error.get('message') or ''}".strip()
                retryable = error_type in _ANTHROPIC_RETRYABLE
                rows.append(_error_row(b.id, key, redact(message), retryable))
        return rows

    def _price(self, provider: str, model: str, pt: int, ct: int, *, batch: bool) -> Decimal:
        try:
            if batch:
                return self.pool.batch_cost(provider, model, pt, ct)
            return self.pool.cost(provider, model, pt, ct)
        except ProviderError:
            return Decimal(0)

    # --- 2. a request of this run -------------------------------------------------------------

    def lookup(self, key: str) -> StoredAnswer | None:
        """The stored answer to use, or the error to fail with (an error worth another batch
        is not returned until the item has had its tries); None: ask in a batch."""
        answer = self.answers.get(key)
        if answer is None or answer.error is None:
            return answer
        if not answer.retryable or self.failures[key] >= BATCH_ITEM_TRIES:
            return answer
        return None

    def failed_retryably(self, key: str) -> bool:
        """Whether the request's last batch answer is an error worth asking again."""
        answer = self.answers.get(key)
        return answer is not None and answer.error is not None and answer.retryable

    def is_waiting(self, key: str) -> bool:
        return key in self.outstanding or key in self.collected

    def collect(self, key: str, req: ChatRequest, estimate: Decimal) -> None:
        self.collected[key] = (req, estimate)

    @staticmethod
    def result(answer: StoredAnswer) -> ChatResult:
        assert answer.text is not None
        return ChatResult(
            text=answer.text,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost_usd=answer.cost_usd,
            latency_ms=0,
            finish_reason=answer.finish_reason,
            attempts=1,
            saved_usd=max(Decimal(0), answer.online_cost_usd - answer.cost_usd),
        )

    def error(self, key: str, answer: StoredAnswer) -> ProviderError:
        return ProviderError(
            answer.error or "failed inside a provider batch",
            retryable=False,
            attempts=max(1, self.failures[key]),
        )

    # --- 3. send what was collected -----------------------------------------------------------

    async def submit(self) -> int:
        """Send the collected requests in batches; returns how many batches were made."""
        by_provider: dict[str, list[tuple[str, bytes, Decimal]]] = {}
        for key, (req, estimate) in self.collected.items():
            cfg = self.pool.configs[req.provider]
            if cfg.kind == "anthropic":
                params = ProviderPool.anthropic_body(req)
                line = orjson.dumps({"custom_id": key, "params": params})
            else:
                body = ProviderPool.request_body(req, cfg.supports_json_mode)
                line = orjson.dumps(
                    {
                        "custom_id": key,
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
            by_provider.setdefault(req.provider, []).append((key, line, estimate))
        made = 0
        for provider, lines in by_provider.items():
            for chunk in _chunks(lines, self.pool.configs[provider]):
                made += 1
                await self._send(provider, chunk)
        self.outstanding |= set(self.collected)
        self.collected.clear()
        return made

    async def _send(self, provider: str, chunk: list[tuple[str, bytes, Decimal]]) -> None:
        keys = [k for k, _, _ in chunk]
        async with transaction(self.sm) as s:
            batch_id = await repo.insert_batch(
                s,
                {
                    "job_id": self.job_id,
                    "provider": provider,
                    "status": "submitting",
                    "keys": keys,
                    "reserved_usd": sum((e for _, _, e in chunk), Decimal(0)),
                },
            )
        jsonl = b"\n".join(line for _, line, _ in chunk) + b"\n"
        try:
            async with BatchClient(self.pool.configs[provider]) as client:
                if self.pool.configs[provider].kind == "anthropic":
                    # No file: the requests go inline, and the batch id is stored as soon as
                    # the provider answers (a worker killed in between cannot find it again).
                    requests = [orjson.loads(line) for _, line, _ in chunk]
                    created = await client.create_messages(requests)
                    await self._update(
                        batch_id,
                        remote_batch_id=created["id"],
                        status=created["status"],
                        remote_status=created["status"],
                        counts=created.get("request_counts") or {},
                    )
                    return
                file_id = await client.upload(jsonl, f"chatpgt-job{self.job_id}-{batch_id}.jsonl")
                await self._update(batch_id, remote_file_id=file_id)
                created = await client.create(file_id, self._metadata(batch_id))
                await self._update(
                    batch_id,
                    remote_batch_id=created["id"],
                    status=created["status"],
                    remote_status=created["status"],
                    counts=created.get("request_counts") or {},
                )
        except ProviderError as exc:
            if exc.retryable:
                # Left "submitting": the next run finishes it (or gives it up and asks again).
                log.warning("job %s: batch %s not submitted yet: %s", self.job_id, batch_id, exc)
                return
            # The provider refused the file or the batch: its items fail with its words.
            async with transaction(self.sm) as s:
                await repo.insert_batch_results(
                    s,
                    [
                        _error_row(batch_id, k, f"the provider refused the batch: {exc}", False)
                        for k in keys
                    ],
                )
                await repo.update_batch(
                    s, batch_id, status="done", remote_status="failed", error=exc.message
                )

    async def cancel_all(self) -> None:
        """Cancel the job's open remote batches (a cancelled job); what they finished stays."""
        async with self.sm() as s:
            batches = await repo.open_batches(s, self.job_id)
            s.expunge_all()
        for b in batches:
            try:
                if b.remote_batch_id is not None:
                    cfg = self.pool.configs[b.provider]
                    async with BatchClient(cfg) as client:
                        if cfg.kind == "anthropic":
                            remote = await client.cancel_messages(b.remote_batch_id)
                        else:
                            remote = await client.cancel(b.remote_batch_id)
                    await self._update(
                        b.id, status=remote["status"], remote_status=remote["status"]
                    )
                    await self._advance(b)
                else:
                    await self._update(b.id, status="abandoned")
            except ProviderError as exc:
                log.warning("job %s: batch %s not cancelled: %s", self.job_id, b.id, exc.message)

    async def _update(self, batch_id: int, **values: Any) -> None:
        async with transaction(self.sm) as s:
            await repo.update_batch(s, batch_id, **values)

    def _metadata(self, batch_id: int) -> dict[str, str]:
        return {"chatpgt_job": str(self.job_id), "chatpgt_batch": str(batch_id)}


def _chunks(
    lines: list[tuple[str, bytes, Decimal]], cfg: Any
) -> list[list[tuple[str, bytes, Decimal]]]:
    chunks: list[list[tuple[str, bytes, Decimal]]] = []
    current: list[tuple[str, bytes, Decimal]] = []
    size = 0
    for item in lines:
        n = len(item[1]) + 1
        if current and (len(current) >= cfg.batch_max_requests or size + n > cfg.batch_max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        chunks.append(current)
    return chunks


def _error_row(batch_id: int, key: str, message: str, retryable: bool) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "key": key,
        "text": None,
        "finish_reason": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": Decimal(0),
        "online_cost_usd": Decimal(0),
        "error": message[:2000],
        "retryable": retryable,
    }


def _batch_error(remote: dict[str, Any]) -> str:
    errors = remote.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return str(data[0].get("message") or data[0].get("code") or "failed")[:500]
    return "the batch failed"
