"""Providers' batch APIs, for providers with ``supports_batch``: OpenAI's (upload a JSONL file
of requests, create a batch, look at it, cancel it, download its output and error files) and
Anthropic's Message Batches (create a batch with its requests inline, look at it, cancel it,
download its results by ``custom_id``).

Only the calls; what a job does with them is :mod:`chatpgt.datagen.batches`. These are a few
requests per batch of thousands, so a plain ``httpx.AsyncClient`` with the provider's timeouts
and a short retry on transport errors, 429 and 5xx is enough. Every failure is a
:class:`ProviderError` whose message is redacted.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self

import httpx
import orjson

from chatpgt.providers.answers import server_words
from chatpgt.providers.keys import missing_key_reason, needs_key
from chatpgt.providers.types import ProviderError
from chatpgt.settings import ProviderConfig

CHAT_ENDPOINT = "/v1/chat/completions"
# A remote batch's statuses after which nothing changes any more.
FINISHED = frozenset({"completed", "failed", "expired", "cancelled", "ended"})
# Anthropic's processing_status in OpenAI's words (``ended`` stays: its results say the rest).
ANTHROPIC_STATUS = {"in_progress": "in_progress", "canceling": "cancelling", "ended": "ended"}
_TRIES = 4


class BatchClient:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        cfg = self.config
        key = cfg.api_key()
        secret = key.get_secret_value() if key is not None else None
        if not secret and needs_key(cfg):
            raise ProviderError(missing_key_reason(cfg), retryable=False, attempts=0)
        if cfg.kind == "anthropic":
            headers = {"anthropic-version": cfg.anthropic_version}
            if secret:
                headers["x-api-key"] = secret
        else:
            headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._client = httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
            trust_env=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def upload(self, jsonl: bytes, filename: str) -> str:
        """Upload a batch input file; its id."""
        data = await self._call(
            "POST",
            "files",
            data={"purpose": "batch"},
            files={"file": (filename, jsonl, "application/jsonl")},
        )
        return str(data["id"])

    async def create(self, file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        return await self._call(
            "POST",
            "batches",
            json={
                "input_file_id": file_id,
                "endpoint": CHAT_ENDPOINT,
                "completion_window": self.config.batch_completion_window,
                "metadata": metadata,
            },
        )

    async def find(self, file_id: str, pages: int = 5) -> dict[str, Any] | None:
        """The batch made from ``file_id``, among the newest ``pages`` pages (a worker that died
        between creating a batch and storing its id finds it here instead of making another)."""
        after: str | None = None
        for _ in range(pages):
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            page = await self._call("GET", "batches", params=params)
            for batch in page.get("data") or []:
                if batch.get("input_file_id") == file_id:
                    return dict(batch)
            if not page.get("has_more"):
                return None
            after = page.get("last_id")
        return None

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._call("GET", f"batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._call("POST", f"batches/{batch_id}/cancel")

    async def download(self, file_id: str) -> bytes:
        response = await self._send("GET", f"files/{file_id}/content")
        return response.content

    # --- Anthropic's Message Batches ------------------------------------------------------------

    async def create_messages(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """A message batch of ``[{"custom_id", "params"}]``, normalised (:meth:`normal`)."""
        return self.normal(
            await self._call("POST", "messages/batches", json={"requests": requests})
        )

    async def retrieve_messages(self, batch_id: str) -> dict[str, Any]:
        return self.normal(await self._call("GET", f"messages/batches/{batch_id}"))

    async def cancel_messages(self, batch_id: str) -> dict[str, Any]:
        return self.normal(await self._call("POST", f"messages/batches/{batch_id}/cancel"))

    async def download_url(self, url: str) -> bytes:
        """A batch's results (``results_url``: an absolute URL on the provider's host)."""
        return (await self._send("GET", url)).content

    @staticmethod
    def normal(batch: dict[str, Any]) -> dict[str, Any]:
        """An Anthropic message batch with OpenAI's ``status`` and ``request_counts`` keys."""
        status = str(batch.get("processing_status") or "")
        return {**batch, "status": ANTHROPIC_STATUS.get(status, status)}

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProviderError(
                f"{self.config.name!r} {method} /{path}: the answer is not JSON", retryable=False
            ) from None
        if not isinstance(data, dict):
            raise ProviderError(
                f"{self.config.name!r} {method} /{path}: the answer is not an object",
                retryable=False,
            )
        return data

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        assert self._client is not None, "use 'async with BatchClient(...)'"
        cfg = self.config
        last = ""
        for attempt in range(1, _TRIES + 1):
            try:
                response = await self._client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                last = f"transport error ({type(exc).__name__})"
            else:
                status = response.status_code
                if status < 400:
                    return response
                detail = server_words(response.content)
                last = f"HTTP {status} from {cfg.name!r}" + (f": {detail}" if detail else "")
                if status not in (408, 429) and status < 500:
                    raise ProviderError(f"{method} /{path}: {last}", retryable=False, status=status)
            if attempt < _TRIES:
                await asyncio.sleep(min(cfg.backoff_max_s, cfg.backoff_base_s * 2**attempt))
        raise ProviderError(f"{method} /{path}: {last} after {_TRIES} attempts", retryable=True)
