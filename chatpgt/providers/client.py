"""The outbound side of ChatPGT: one pooled HTTP client for every OpenAI-compatible provider.

:class:`ProviderPool` is created once per process (or per event loop) and owns one
``httpx.AsyncClient`` on the aiohttp transport, which measured far better than httpx's default
transport at hundreds of requests in flight. Each provider gets its own limiter (concurrency,
requests and tokens per minute), timeout and retry policy from its :class:`ProviderConfig`::

    async with ProviderPool(settings.provider_configs()) as pool:
        result = await pool.chat(ChatRequest(provider="openai", model="gpt-4o-mini", messages=...))

Retries: transport errors, timeouts, HTTP 408, 429 and 5xx are retried up to
``config.max_retries`` times with exponential backoff and full jitter, honouring ``retry-after-ms``
and then ``Retry-After``. Every other failure raises :class:`ProviderError` at once. Messages in
errors never contain the API key, request headers or the request body: the server's own words
are redacted (:mod:`chatpgt.redact`) before they become a :class:`ProviderError`.

A 200 whose body is not a usable chat completion is a ProviderError too, with a short reason
(``malformed response from 'x' (HTTP 200): body is not valid JSON (truncated at byte 812)``);
bodies are read in chunks up to ``config.max_response_bytes`` and never further. Which of those
are retried is decided in :func:`_parse_completion`.

Providers of kind ``local`` run a transformers model in this process instead
(:class:`chatpgt.providers.local.LocalProvider`, imported on first use so that a process that
never calls one, like the API, never imports torch). :meth:`ProviderPool.judge_ab` reads a
pairwise verdict from next-token probabilities of either kind.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from chatpgt.metrics import count_provider_retry, observe_provider_attempt
from chatpgt.providers.ab import AB_TOP_LOGPROBS, ab_from_top_logprobs
from chatpgt.providers.limits import ProviderLimiter
from chatpgt.providers.types import ABResult, ChatRequest, ChatResult, LocalOptions, ProviderError
from chatpgt.redact import redact, redact_known

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from chatpgt.providers.local import LocalProvider
    from chatpgt.settings import ProviderConfig

# What estimate_cost assumes a request may produce when it sets no max_tokens.
DEFAULT_MAX_TOKENS_ESTIMATE = 4096
# The connection pool never allows fewer than this many connections: the datagen fan-out runs
# about a thousand requests in flight, and aiohttp's own default (100) would queue the rest.
MIN_CONNECTIONS = 1000
# A Retry-After longer than this (or than backoff_max_s, if larger) is cut to it.
RETRY_AFTER_CAP_S = 60.0
# Per-message framing tokens in chat formats; it keeps the prompt estimate from undershooting.
_MESSAGE_OVERHEAD_TOKENS = 4
_RETRYABLE_STATUS = frozenset({408, 429})
_MILLION = Decimal(1_000_000)
_ERROR_DETAIL_CHARS = 300
# An error answer (4xx/5xx) is only read for its message: this much of it is plenty.
_ERROR_BODY_BYTES = 64 * 1024
# How often a 200 whose text is undecodable (not UTF-8, NUL characters) is retried: once, not
# max_retries times; see _parse_completion.
_ENCODING_RETRIES = 1


def estimate_tokens(chars: int) -> int:
    """Tokens in ``chars`` characters of English-like text (about four characters a token)."""
    return (chars + 3) // 4


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Prompt tokens of a chat request, as the server would roughly count them."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if content:
            chars += len(content)
    return estimate_tokens(chars) + _MESSAGE_OVERHEAD_TOKENS * len(messages)


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or
    an HTTP date); None when neither is present and valid."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if ms >= 0 and math.isfinite(ms):
            return ms / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
        return max(0.0, seconds)
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


@dataclass(slots=True)
class _Provider:
    """What the pool precomputes per provider so a request does no config work."""

    config: ProviderConfig
    # Parsed once: httpx re-parses a str URL on every request, a measurable share of its CPU.
    # None when base_url is not an http(s) URL; such a provider fails each call at once.
    url: httpx.URL | None
    timeout: httpx.Timeout
    deadline_s: float
    limiter: ProviderLimiter


class ProviderPool:
    """Sends chat requests to configured providers under their limits, with retries.

    Create it with ``Settings.provider_configs()``; call ``await start()`` (or use ``async with``)
    on the event loop that will use it, and ``await aclose()`` at shutdown. The HTTP client and
    the limiters belong to that loop: a Celery task that runs a fresh loop per call needs a
    fresh pool per call.

    Pass ``redis`` (a ``redis.asyncio.Redis``) to share requests- and tokens-per-minute limits
    across processes; concurrency limits are always per process. ``max_connections`` bounds the
    HTTP connection pool (default: the larger of 1,000 and the sum of providers' concurrency).
    ``local_options`` configures providers of kind ``local`` (model cache directory, device,
    batching); their requests skip the HTTP limiter and queue for the model's batches instead.
    """

    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        *,
        redis: Redis | None = None,
        limiter_key_prefix: str = "chatpgt:limits",
        max_connections: int | None = None,
        local_options: LocalOptions | None = None,
    ) -> None:
        self._configs = dict(configs)
        self._local_options = local_options or LocalOptions()
        self._local: dict[str, LocalProvider] = {}
        self._redis = redis
        self._key_prefix = limiter_key_prefix
        total = sum(c.max_concurrency for c in self._configs.values())
        self._max_connections = max_connections or max(MIN_CONNECTIONS, total)
        self._providers: dict[str, _Provider] = {}
        self._prices: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        self._client: httpx.AsyncClient | None = None
        self._rng = random.Random()

    @property
    def configs(self) -> Mapping[str, ProviderConfig]:
        """The provider configurations this pool serves, by name."""
        return self._configs

    def limiter(self, provider: str) -> ProviderLimiter:
        """The live limiter of a started pool's provider (KeyError when unknown)."""
        return self._providers[provider].limiter

    async def start(self) -> None:
        """Open the HTTP client and build the limiters; a second call does nothing."""
        if self._client is not None:
            return
        for name, cfg in self._configs.items():
            self._providers[name] = _Provider(
                config=cfg,
                url=_chat_url(cfg.base_url),
                timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
                # The transport's read timeout restarts with every chunk; this caps the whole
                # attempt so a server that trickles bytes cannot hold a slot forever.
                deadline_s=cfg.connect_timeout_s + cfg.timeout_s,
                limiter=ProviderLimiter.from_config(
                    cfg, redis=self._redis, key_prefix=self._key_prefix
                ),
            )
        n = self._max_connections
        transport = AiohttpTransport(
            limits=httpx.Limits(
                max_connections=n, max_keepalive_connections=n, keepalive_expiry=30.0
            )
        )
        # trust_env=False: environment proxies would be mounted on httpx's default transport,
        # silently bypassing the aiohttp one and its connection limit.
        client = httpx.AsyncClient(transport=transport, trust_env=False, timeout=None)
        # httpx parses every response into a cookie jar through urllib compatibility objects,
        # ~8% of our CPU per request, and no LLM API needs cookies. httpx has no switch for it,
        # so swap the jar for one that ignores Set-Cookie; if httpx renames the attribute this
        # silently does nothing.
        if isinstance(getattr(client, "_cookies", None), httpx.Cookies):
            client._cookies = _NoCookies()
        self._client = client

    async def aclose(self) -> None:
        """Close the HTTP client (idempotent). Call it once in-flight calls have finished:
        a call still running when the client closes fails with an exception."""
        client, self._client = self._client, None
        local, self._local = list(self._local.values()), {}
        for provider in local:
            await provider.aclose()
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- money --------------------------------------------------------------------------------

    def cost(
        self, provider: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> Decimal:
        """US dollars for the given usage at the configured prices (exact, not rounded).

        Raises ProviderError(retryable=False) for an unknown provider. Works before start().
        """
        price_in, price_out = self._price(provider, model)
        return (prompt_tokens * price_in + completion_tokens * price_out) / _MILLION

    def estimate_cost(self, req: ChatRequest) -> Decimal:
        """An upper bound on one attempt's cost, for budget checks before sending.

        Prompt tokens are estimated from the characters (about four a token) and the completion
        is assumed to use all of ``max_tokens`` (or DEFAULT_MAX_TOKENS_ESTIMATE when unset).
        """
        completion = req.max_tokens or DEFAULT_MAX_TOKENS_ESTIMATE
        return self.cost(req.provider, req.model, estimate_prompt_tokens(req.messages), completion)

    def _price(self, provider: str, model: str) -> tuple[Decimal, Decimal]:
        """(input, output) US dollars per million tokens, as exact decimals."""
        found = self._prices.get((provider, model))
        if found is None:
            cfg = self._configs.get(provider)
            if cfg is None:
                raise ProviderError(f"unknown provider {provider!r}", retryable=False)
            price = cfg.price_for(model)
            # str() first: Decimal(0.15) would carry the float's binary error into every cost.
            found = (Decimal(str(price.input_per_mtok)), Decimal(str(price.output_per_mtok)))
            self._prices[(provider, model)] = found
        return found

    # --- requests -----------------------------------------------------------------------------

    async def chat(self, req: ChatRequest) -> ChatResult:
        """Send one chat completion, retrying what is worth retrying.

        Returns the answer's text ("" when the model produced none: the caller decides whether
        that is a failure), usage (estimated when the server reports none), cost, latency of the
        whole call including waits and retries, and the number of attempts.

        Raises ProviderError: ``retryable=False`` for an unknown provider, a 4xx other than 408
        and 429 (bad request, wrong key, ...) or a 200 whose body is not a chat completion;
        ``retryable=True`` when retries ran out (``attempts`` says how many were made).

        A provider of kind ``local`` answers from a model in this process instead
        (``req.model`` is a model directory or an alias; see
        :meth:`chatpgt.providers.local.LocalProvider.chat`): no HTTP, limiter or retries, and a
        model that cannot be found or loaded is ProviderError(retryable=False) naming it.
        """
        p, client = self._started(req)
        cfg = p.config
        url = p.url
        if cfg.kind == "local":
            return await self._local_provider(req.provider).chat(req)
        if cfg.kind != "openai":
            raise ProviderError(
                f"provider {req.provider!r} is of kind {cfg.kind!r}, which this pool cannot call",
                retryable=False,
            )
        if url is None:
            raise ProviderError(
                f"provider {req.provider!r} has no http(s) base_url", retryable=False
            )

        body = orjson.dumps(self._body(req, cfg.supports_json_mode))
        headers = {"Content-Type": "application/json"}
        key = cfg.api_key()
        secret = key.get_secret_value() if key is not None else None
        if secret:
            headers["Authorization"] = "Bearer " + secret
        prompt_estimate = estimate_prompt_tokens(req.messages)
        # OpenAI charges max_tokens against the tokens-per-minute limit when the request arrives.
        token_estimate = prompt_estimate + (req.max_tokens or DEFAULT_MAX_TOKENS_ESTIMATE)

        started = time.perf_counter()
        limiter = p.limiter
        attempts = 0
        encoding_faults = 0
        cap = cfg.max_response_bytes
        while True:
            attempts += 1
            status: int | None = None
            retry_after: float | None = None
            permit = await limiter.acquire(token_estimate)
            attempt_started = time.perf_counter()
            try:
                # The deadline covers reading the body too: a trickled answer cannot hold a slot.
                async with asyncio.timeout(p.deadline_s):
                    response = await client.send(
                        client.build_request(
                            "POST", url, content=body, headers=headers, timeout=p.timeout
                        ),
                        stream=True,
                    )
                    try:
                        status = response.status_code
                        raw, complete = await _read_capped(
                            response, cap if status == 200 else _ERROR_BODY_BYTES
                        )
                    finally:
                        # Unread bytes (a body over the cap) make aiohttp drop the connection
                        # rather than reuse it.
                        await response.aclose()
            # RequestError, not only TransportError: a body that fails to decode (a broken gzip
            # stream) is httpx.DecodingError, and it is as transient as a dropped connection.
            except (httpx.RequestError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                status = None
                last = _describe_transport_error(exc, cfg)
            else:
                if status == 200:
                    permit.release()
                    if not complete:
                        raise ProviderError(
                            f"malformed response from {req.provider!r} (HTTP 200): response body "
                            f"over {cap} bytes (max_response_bytes)",
                            retryable=False,
                            status=200,
                            attempts=attempts,
                        )
                    try:
                        parsed = _parse_completion(raw)
                    except _MalformedBody as exc:
                        last = f"malformed response from {req.provider!r} (HTTP 200): {exc.reason}"
                        if exc.kind == "encoding":
                            encoding_faults += 1
                        if exc.kind == "shape" or encoding_faults > _ENCODING_RETRIES:
                            raise ProviderError(
                                last if attempts == 1 else f"{last} after {attempts} attempts",
                                retryable=False,
                                status=200,
                                attempts=attempts,
                            ) from None
                    else:
                        result = self._result(req, parsed, prompt_estimate, attempts, started)
                        await permit.settle(result.prompt_tokens + result.completion_tokens)
                        return result
                elif status in _RETRYABLE_STATUS or status >= 500:
                    detail = _server_words(raw)
                    last = f"HTTP {status}" + (f" ({detail})" if detail else "")
                    retry_after = parse_retry_after(response.headers)
                else:
                    permit.release()
                    raise ProviderError(
                        _describe_failure(response, raw, cfg, secret),
                        retryable=False,
                        status=status,
                        attempts=attempts,
                    )
            finally:
                permit.release()
                observe_provider_attempt(
                    req.provider, req.model, status, time.perf_counter() - attempt_started
                )

            if attempts > cfg.max_retries:
                raise ProviderError(
                    f"{last} after {attempts} attempts",
                    retryable=True,
                    status=status,
                    attempts=attempts,
                )
            count_provider_retry(req.provider, status)
            delay = self._backoff(cfg, attempts, retry_after)
            if retry_after is not None:
                # The provider spoke for all our requests, not just this one.
                limiter.pause(delay)
            await asyncio.sleep(delay)

    async def judge_ab(self, req: ChatRequest) -> ABResult:
        """A pairwise verdict from the probabilities of the answers "A" and "B", no text parsed.

        ``req.messages`` should ask for a one-letter answer. A ``local`` provider runs one
        forward pass (see :meth:`LocalProvider.judge_ab`). An ``openai`` provider gets one chat
        completion with ``max_tokens=1``, ``logprobs`` and ``top_logprobs=20`` (json_mode off;
        the same limits and retries as :meth:`chat`), and the first token's top_logprobs are
        read: "A" sums the tokens "A" and " A" (likewise "B"), a letter not listed counts as 0,
        and the two are normalised to sum to 1 (``mass`` is their sum before that).
        ``req.extra["answer_prefix"]`` is honoured by local providers only; it is never sent to
        an API (chat completions cannot continue a partial answer).

        Raises ProviderError as :meth:`chat` does, and ``retryable=False`` when the provider
        returns no logprobs or neither letter is among them (carrying the tokens and cost
        spent). Turn the result into a winner and confidence with
        :func:`chatpgt.providers.ab.confidence_from_ab`.
        """
        p, _ = self._started(req)
        if p.config.kind == "local":
            return await self._local_provider(req.provider).judge_ab(req)
        extra = {k: v for k, v in req.extra.items() if k != "answer_prefix"}
        extra.update(logprobs=True, top_logprobs=AB_TOP_LOGPROBS)
        result = await self.chat(replace(req, max_tokens=1, json_mode=False, extra=extra))
        try:
            p_a, p_b, mass = ab_from_top_logprobs(result.logprobs)
        except ValueError as exc:
            raise ProviderError(
                f"{req.provider!r} model {req.model!r}: {exc}"[:_ERROR_DETAIL_CHARS],
                retryable=False,
                status=200,
                attempts=result.attempts,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                cost_usd=result.cost_usd,
            ) from None
        return ABResult(
            p_a=p_a,
            p_b=p_b,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=result.cost_usd,
            latency_ms=result.latency_ms,
            attempts=result.attempts,
            mass=mass,
        )

    def _started(self, req: ChatRequest) -> tuple[_Provider, httpx.AsyncClient]:
        p = self._providers.get(req.provider)
        if p is None and req.provider not in self._configs:
            raise ProviderError(f"unknown provider {req.provider!r}", retryable=False)
        client = self._client
        if client is None or p is None:
            raise RuntimeError("ProviderPool is not started: use 'async with' or start()")
        return p, client

    def _local_provider(self, name: str) -> LocalProvider:
        provider = self._local.get(name)
        if provider is None:
            # Imported here: the module is light, but the API process has no use for it.
            from chatpgt.providers.local import LocalProvider

            def price(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
                return self.cost(name, model, prompt_tokens, completion_tokens)

            provider = LocalProvider(name, self._local_options, price=price)
            self._local[name] = provider
        return provider

    def local_provider(self, name: str) -> LocalProvider:
        """The pool's LocalProvider for a provider of kind ``local`` (for stats, preloading).

        Raises ProviderError(retryable=False) when ``name`` is unknown or not of kind local.
        """
        cfg = self._configs.get(name)
        if cfg is None or cfg.kind != "local":
            raise ProviderError(f"{name!r} is not a local provider", retryable=False)
        return self._local_provider(name)

    def _backoff(self, cfg: ProviderConfig, failures: int, retry_after: float | None) -> float:
        # Full jitter (AWS architecture blog): uniform in [0, min(max, base * 2^n)].
        ceiling = min(cfg.backoff_max_s, cfg.backoff_base_s * (2 ** (failures - 1)))
        if retry_after is None:
            return self._rng.uniform(0.0, ceiling)
        wait = min(retry_after, max(cfg.backoff_max_s, RETRY_AFTER_CAP_S))
        # A little jitter on top, never below what the server asked for, so that every
        # request told to wait does not come back in the same millisecond.
        return wait + self._rng.uniform(0.0, min(ceiling, wait / 4))

    @staticmethod
    def _body(req: ChatRequest, supports_json_mode: bool) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra) if req.extra else {}
        body["model"] = req.model
        body["messages"] = req.messages
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.json_mode and supports_json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def _result(
        self,
        req: ChatRequest,
        parsed: _Completion,
        prompt_estimate: int,
        attempts: int,
        started: float,
    ) -> ChatResult:
        data, choice, text = parsed
        usage = data.get("usage")
        prompt_tokens = completion_tokens = None
        if isinstance(usage, dict):
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int):
            prompt_tokens = prompt_estimate
        if not isinstance(completion_tokens, int):
            completion_tokens = estimate_tokens(len(text))
        price_in, price_out = self._price(req.provider, req.model)
        logprobs = choice.get("logprobs")
        return ChatResult(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=(prompt_tokens * price_in + completion_tokens * price_out) / _MILLION,
            latency_ms=int((time.perf_counter() - started) * 1000),
            finish_reason=choice.get("finish_reason"),
            attempts=attempts,
            logprobs=logprobs.get("content") if isinstance(logprobs, dict) else None,
        )


# A parsed chat completion: the whole document, choices[0], and the content ("" when null).
_Completion = tuple[dict[str, Any], dict[str, Any], str]


class _MalformedBody(Exception):
    """A 200 body that is not a usable chat completion; ``kind`` decides whether to retry."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """The body, read chunk by chunk (decoded), and whether it was complete within ``cap`` bytes.

    A body declared (Content-Length) or found to be larger stops the read at once: at most about
    ``cap`` bytes plus one chunk are ever held.
    """
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def _parse_completion(raw: bytes) -> _Completion:
    """Read a 200 body as a chat completion, or raise _MalformedBody with a short reason.

    Every such answer has usually been billed, so retrying is not free. The kinds, and why:

    - ``truncated``: empty, or the JSON document ends early. A connection or proxy cut it; that
      is transient like a transport error, so it is retried within ``max_retries``.
    - ``encoding``: not UTF-8 (a Latin-1 body declared UTF-8, stray bytes, lone surrogates) or
      NUL characters in the content (Postgres text cannot hold them). Usually a server's
      encoding bug, which a retry only repeats; sometimes a sampled token that split a character.
      So it is retried once (``_ENCODING_RETRIES``), not ``max_retries`` times: a broken server
      costs one extra request per item, not six.
    - ``shape``: not JSON at all (an HTML page: a wrong base_url or a proxy's page), or JSON that
      is not a chat completion (no ``choices``, no ``message``, content not a string). The server
      speaks another protocol and will answer the same again: fails at once.

    A body over ``max_response_bytes`` is refused before this (not retried either: ``max_tokens``
    bounds a real answer, so an oversized one is a broken server, and reading it again costs as
    much as reading it once).
    """
    if not raw.strip():
        raise _MalformedBody("truncated", "empty body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _MalformedBody(
            "encoding",
            f"body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
        ) from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        stripped = text.strip()
        if exc.pos >= len(stripped) and stripped[:1] in ("{", "["):
            raise _MalformedBody(
                "truncated", f"body is not valid JSON (truncated at byte {len(raw)})"
            ) from None
        kind = "encoding" if "surrogate" in exc.msg else "shape"
        detail = f"{exc.msg} at char {exc.pos}"
        if stripped[:1] not in ("{", "["):
            detail = f"starts with {stripped[:20]!r}"
        raise _MalformedBody(kind, f"body is not valid JSON ({detail})"[:200]) from None
    if not isinstance(data, dict):
        raise _MalformedBody("shape", f"body is a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        what = "no 'choices'" if choices is None else "'choices' is not a non-empty list"
        raise _MalformedBody("shape", f"not a chat completion: {what}")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _MalformedBody("shape", "not a chat completion: choices[0] has no 'message'")
    content = message.get("content")
    if content is None:
        content = ""  # a null content (e.g. a refusal or tool call): the caller judges ""
    if not isinstance(content, str):
        raise _MalformedBody(
            "shape", f"message.content is a JSON {_json_type(content)}, not a string"
        )
    if "\x00" in content:
        raise _MalformedBody("encoding", "message.content contains NUL characters")
    assert isinstance(choice, dict)
    return data, choice, redact_known(content)


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else type(value).__name__


def _describe_transport_error(exc: BaseException, cfg: ProviderConfig) -> str:
    # httpx_aiohttp maps some aiohttp errors to the wrong httpx class (a refused connection
    # becomes ConnectTimeout), so judge by the aiohttp exception it chains when there is one.
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ else exc
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        return f"timeout ({cfg.timeout_s:g} s)"
    return f"transport error ({type(cause).__name__})"


def _chat_url(base_url: str) -> httpx.URL | None:
    try:
        url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
    except httpx.InvalidURL:
        return None
    return url if url.scheme in ("http", "https") and url.host else None


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def _describe_failure(
    response: httpx.Response, raw: bytes, cfg: ProviderConfig, secret: str | None
) -> str:
    """A storable message for a non-retryable HTTP answer: status and the server's own words,
    scrubbed of anything key-like; never our headers or body."""
    status = response.status_code
    if status in (401, 403):
        # The body may quote part of the key (OpenAI does), so it is not shown at all.
        env = f"${cfg.api_key_env}" if cfg.api_key_env else "no api_key_env"
        if secret:
            return f"HTTP {status} from {cfg.name!r}: the API key ({env}) was refused"
        return f"HTTP {status} from {cfg.name!r}: no API key was sent ({env} is not set)"
    detail = _server_words(raw)
    return f"HTTP {status} from {cfg.name!r}" + (f": {detail}" if detail else "")


def _server_words(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, redacted and cut short ("" when the
    body has none). Redacted before it is cut, so a cut cannot leave half a key behind; the key
    this pool sent is known to the redactor (``ProviderConfig.api_key`` registers it)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        detail = str(error.get("message") or "")
    elif isinstance(error, str):
        detail = error
    else:
        return ""
    return " ".join(redact(detail).split())[:_ERROR_DETAIL_CHARS]
