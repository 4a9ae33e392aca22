"""The outbound side of ChatPGT: one pooled HTTP transport for every OpenAI-compatible provider.

:class:`ProviderPool` is created once per process (or per event loop) and owns one aiohttp
transport (``httpx_aiohttp``), which measured far better than httpx's default transport at
hundreds of requests in flight. Requests go straight to the transport's public
``handle_async_request``: no LLM API needs what ``httpx.AsyncClient`` adds on top (cookie jar,
redirects, auth flows, event hooks), and the cookie jar alone cost ~8 % of our CPU per request.
Each provider gets its own limiter (concurrency, requests and tokens per minute), timeout and
retry policy from its :class:`ProviderConfig`::

    async with ProviderPool(settings.provider_configs()) as pool:
        result = await pool.chat(ChatRequest(provider="openai", model="gpt-4o-mini", messages=...))

Retries (tenacity): transport errors, timeouts, HTTP 408, 429 and 5xx are retried up to
``config.max_retries`` times with exponential backoff and full jitter, honouring ``retry-after-ms``
and then ``Retry-After``. Every other failure raises :class:`ProviderError` at once. Messages in
errors never contain the API key, request headers or the request body: the server's own words
are redacted (:mod:`chatpgt.redact`) before they become a :class:`ProviderError`.

A provider whose declaration names a key (``api_key_env``, ``api_key_file``) that is not there
when a request is made fails it at once, nothing sent (:mod:`chatpgt.providers.keys`).

A 200 whose body is not a usable chat completion is a ProviderError too, with a short reason
(``malformed response from 'x' (HTTP 200): body is not valid JSON (truncated at byte 812)``);
bodies are read in chunks up to ``config.max_response_bytes`` and never further. Which of those
are retried is decided in :func:`chatpgt.providers.answers.parse_completion`.

Providers of kind ``local`` run a transformers model in this process instead
(:class:`chatpgt.providers.local.LocalProvider`, imported on first use so that a process that
never calls one, like the API, never imports torch). :meth:`ProviderPool.judge_ab` reads a
pairwise verdict from next-token probabilities of either kind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential

from chatpgt.metrics import count_provider_retry, observe_provider_attempt
from chatpgt.providers.ab import AB_TOP_LOGPROBS, ab_from_top_logprobs
from chatpgt.providers.answers import (
    ENCODING_RETRIES,
    ERROR_BODY_BYTES,
    ERROR_DETAIL_CHARS,
    Completion,
    MalformedBody,
    describe_failure,
    describe_transport_error,
    parse_anthropic_message,
    parse_completion,
    parse_retry_after,
    read_capped,
    server_words,
)
from chatpgt.providers.keys import missing_key_reason, needs_key
from chatpgt.providers.limits import ProviderLimiter
from chatpgt.providers.types import ABResult, ChatRequest, ChatResult, LocalOptions, ProviderError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from chatpgt.providers.local import LocalProvider
    from chatpgt.settings import ProviderConfig

__all__ = ["ProviderPool", "estimate_prompt_tokens", "estimate_tokens", "parse_retry_after"]

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
# Provider kinds spoken over HTTP: OpenAI's chat completions, Anthropic's Messages API.
HTTP_KINDS = frozenset({"openai", "anthropic"})
# Request fields with no Anthropic equivalent (the Messages API refuses unknown fields).
_NOT_ANTHROPIC = frozenset({"seed", "logprobs", "top_logprobs", "response_format"})
_MILLION = Decimal(1_000_000)

# One line per attempt at DEBUG, in httpx's own words (httpx.AsyncClient logged them before the
# pool went straight to the transport): never the headers or the body.
log = logging.getLogger("chatpgt.providers")


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


@dataclass(slots=True)
class _Provider:
    """What the pool precomputes per provider so a request does no config work."""

    config: ProviderConfig
    # Parsed once: httpx re-parses a str URL on every request, a measurable share of its CPU.
    # None when base_url is not an http(s) URL; such a provider fails each call at once.
    url: httpx.URL | None
    # httpx's timeout extension, as the transport reads it.
    timeout: dict[str, float | None]
    deadline_s: float
    limiter: ProviderLimiter
    needs_key: bool
    # The retry policy; copied per call (tenacity keeps a call's state on the controller).
    retrying: AsyncRetrying


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
        self._transport: AiohttpTransport | None = None

    @property
    def configs(self) -> Mapping[str, ProviderConfig]:
        """The provider configurations this pool serves, by name."""
        return self._configs

    def limiter(self, provider: str) -> ProviderLimiter:
        """The live limiter of a started pool's provider (KeyError when unknown)."""
        return self._providers[provider].limiter

    async def start(self) -> None:
        """Open the HTTP transport and build the limiters; a second call does nothing."""
        if self._transport is not None:
            return
        for name, cfg in self._configs.items():
            limiter = ProviderLimiter.from_config(
                cfg, redis=self._redis, key_prefix=self._key_prefix
            )
            self._providers[name] = _Provider(
                config=cfg,
                url=_chat_url(cfg.base_url, cfg.kind),
                timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s).as_dict(),
                # The transport's read timeout restarts with every chunk; this caps the whole
                # attempt so a server that trickles bytes cannot hold a slot forever.
                deadline_s=cfg.connect_timeout_s + cfg.timeout_s,
                limiter=limiter,
                needs_key=needs_key(cfg),
                retrying=AsyncRetrying(
                    stop=stop_after_attempt(cfg.max_retries + 1),
                    wait=_Backoff(cfg, limiter),
                    retry=retry_if_exception_type(_Retryable),
                    retry_error_callback=_give_up,
                    before_sleep=_retry_counter(name),
                    sleep=asyncio.sleep,
                ),
            )
        n = self._max_connections
        # No environment proxies (trust_env=False): requests go to the configured base_url.
        self._transport = AiohttpTransport(
            trust_env=False,
            limits=httpx.Limits(
                max_connections=n, max_keepalive_connections=n, keepalive_expiry=30.0
            ),
        )

    async def aclose(self) -> None:
        """Close the HTTP transport (idempotent). Call it once in-flight calls have finished:
        a call still running when the client closes fails with an exception."""
        transport, self._transport = self._transport, None
        local, self._local = list(self._local.values()), {}
        for provider in local:
            await provider.aclose()
        if transport is not None:
            await transport.aclose()

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

    def batch_cost(
        self, provider: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> Decimal:
        """US dollars for the usage through the provider's Batch API: the model's batch prices
        when its price names them, else the online prices less the provider's
        ``batch_discount``."""
        cfg = self._configs.get(provider)
        if cfg is None:
            raise ProviderError(f"unknown provider {provider!r}", retryable=False)
        price = cfg.price_for(model)
        factor = Decimal(1) - Decimal(str(cfg.batch_discount))
        price_in, price_out = self._price(provider, model)
        if price.batch_input_per_mtok is not None:
            price_in = Decimal(str(price.batch_input_per_mtok))
        else:
            price_in *= factor
        if price.batch_output_per_mtok is not None:
            price_out = Decimal(str(price.batch_output_per_mtok))
        else:
            price_out *= factor
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
        that is a failure), usage (estimated when the server reports none), cost, latency (from
        the moment the first attempt got its permit: retries and their backoff count, queueing
        behind this provider's concurrency and rate limits does not), and the number of attempts.

        Raises ProviderError: ``retryable=False`` for an unknown provider, a 4xx other than 408
        and 429 (bad request, wrong key, ...) or a 200 whose body is not a chat completion;
        ``retryable=True`` when retries ran out (``attempts`` says how many were made).

        A provider of kind ``local`` answers from a model in this process instead
        (``req.model`` is a model directory or an alias; see
        :meth:`chatpgt.providers.local.LocalProvider.chat`): no HTTP, limiter or retries, and a
        model that cannot be found or loaded is ProviderError(retryable=False) naming it.
        """
        p, transport = self._started(req)
        cfg = p.config
        if cfg.kind == "local":
            return await self._local_provider(req.provider).chat(req)
        if cfg.kind not in HTTP_KINDS:
            raise ProviderError(
                f"provider {req.provider!r} is of kind {cfg.kind!r}, which this pool cannot call",
                retryable=False,
            )
        if p.url is None:
            raise ProviderError(
                f"provider {req.provider!r} has no http(s) base_url", retryable=False
            )
        # Read per request (an environment lookup, or a small file read): a key that is removed
        # while a job runs fails the next request at once, before anything is sent.
        key = cfg.api_key()
        secret = key.get_secret_value() if key is not None else None
        if not secret and p.needs_key:
            raise ProviderError(missing_key_reason(cfg), retryable=False, attempts=0)
        headers = {"Content-Type": "application/json"}
        if cfg.kind == "anthropic":
            headers["anthropic-version"] = cfg.anthropic_version
            if secret:
                headers["x-api-key"] = secret
            body = self.anthropic_body(req)
        else:
            if secret:
                headers["Authorization"] = "Bearer " + secret
            body = self._body(req, cfg.supports_json_mode)
        call = _Call(self, p, transport, req, orjson.dumps(body))
        call.headers = headers
        call.secret = secret
        # The first attempt runs bare: most calls succeed at once, and a tenacity controller
        # (a copy per call: it keeps per-call state on itself) cost ~17 % of a datagen job's
        # CPU at 1,000 in flight. An attempt worth another hands over to tenacity, which
        # replays that failure as its first attempt (the same backoff, retry counts and
        # give-up as if tenacity had made it).
        try:
            return await call.attempt()
        except _Retryable as exc:
            first: _Retryable | None = exc

        async def again() -> ChatResult:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await call.attempt()

        return await p.retrying.copy()(again)

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
                f"{req.provider!r} model {req.model!r}: {exc}"[:ERROR_DETAIL_CHARS],
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

    def _started(self, req: ChatRequest) -> tuple[_Provider, AiohttpTransport]:
        p = self._providers.get(req.provider)
        if p is None and req.provider not in self._configs:
            raise ProviderError(f"unknown provider {req.provider!r}", retryable=False)
        transport = self._transport
        if transport is None or p is None:
            raise RuntimeError("ProviderPool is not started: use 'async with' or start()")
        return p, transport

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

    @staticmethod
    def request_body(req: ChatRequest, supports_json_mode: bool) -> dict[str, Any]:
        """The chat-completions body of a request (a Batch API line's ``body`` too)."""
        return ProviderPool._body(req, supports_json_mode)

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

    @staticmethod
    def anthropic_body(req: ChatRequest) -> dict[str, Any]:
        """The Messages API body: system messages go to ``system``; ``max_tokens`` is required
        (DEFAULT_MAX_TOKENS_ESTIMATE when the request sets none); ``top_p`` is sent only below 1
        (recent Claude models refuse temperature and top_p together, and 1 changes nothing);
        JSON mode, ``seed`` and logprobs have no Anthropic equivalent and are not sent."""
        extra = {k: v for k, v in req.extra.items() if k not in _NOT_ANTHROPIC}
        system = [m["content"] for m in req.messages if m.get("role") == "system"]
        body: dict[str, Any] = {
            **extra,
            "model": req.model,
            "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS_ESTIMATE,
            "messages": [m for m in req.messages if m.get("role") != "system"],
        }
        if system:
            body["system"] = "\n\n".join(system)
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
        if req.top_p is not None and req.top_p < 1:
            body["top_p"] = req.top_p
        return body

    def _result(
        self,
        req: ChatRequest,
        parsed: Completion,
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


def _chat_url(base_url: str, kind: str = "openai") -> httpx.URL | None:
    path = "/messages" if kind == "anthropic" else "/chat/completions"
    try:
        url = httpx.URL(base_url.rstrip("/") + path)
    except httpx.InvalidURL:
        return None
    return url if url.scheme in ("http", "https") and url.host else None


class _Retryable(Exception):
    """An attempt that failed in a way worth another: a transport error or timeout, HTTP 408,
    429 or 5xx, a truncated 200 body, an undecodable one (once). ``message`` is what the final
    ProviderError says when the retries run out."""

    def __init__(self, message: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class _Backoff:
    """tenacity's wait: full jitter (AWS architecture blog), uniform in
    [0, min(backoff_max_s, backoff_base_s * 2^(n-1))]; when the server said how long to wait,
    that (capped), plus a little jitter never below it, and the whole provider pauses."""

    __slots__ = ("_ceiling", "_cap", "_limiter", "_rng")

    def __init__(self, cfg: ProviderConfig, limiter: ProviderLimiter) -> None:
        self._ceiling = wait_exponential(multiplier=cfg.backoff_base_s, max=cfg.backoff_max_s)
        self._cap = max(cfg.backoff_max_s, RETRY_AFTER_CAP_S)
        self._limiter = limiter
        self._rng = random.Random()

    def __call__(self, state: RetryCallState) -> float:
        ceiling = self._ceiling(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = exc.retry_after if isinstance(exc, _Retryable) else None
        if retry_after is None:
            return self._rng.uniform(0.0, ceiling)
        wait = min(retry_after, self._cap)
        # The provider spoke for all our requests, not just this one.
        self._limiter.pause(wait)
        # Jitter on top, so that every request told to wait does not come back in the same ms.
        return wait + self._rng.uniform(0.0, min(ceiling, wait / 4))


def _retry_counter(provider: str) -> Callable[[RetryCallState], None]:
    """tenacity's before_sleep for one provider: counts the retry in the metrics."""

    def count(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        count_provider_retry(provider, exc.status if isinstance(exc, _Retryable) else None)

    return count


def _give_up(state: RetryCallState) -> ChatResult:
    exc = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(exc, _Retryable)
    n = state.attempt_number
    raise ProviderError(
        f"{exc.message} after {n} attempts", retryable=True, status=exc.status, attempts=n
    )


class _Call:
    """One chat call's attempts: what every attempt sends, and what the attempts have seen."""

    __slots__ = (
        "pool",
        "p",
        "transport",
        "req",
        "body",
        "headers",
        "secret",
        "prompt_estimate",
        "token_estimate",
        "started",
        "attempts",
        "encoding_faults",
    )

    def __init__(
        self,
        pool: ProviderPool,
        p: _Provider,
        transport: AiohttpTransport,
        req: ChatRequest,
        body: bytes,
    ) -> None:
        self.pool = pool
        self.p = p
        self.transport = transport
        self.req = req
        self.body = body
        self.headers: dict[str, str] = {}
        self.secret: str | None = None
        self.prompt_estimate = estimate_prompt_tokens(req.messages)
        # OpenAI charges max_tokens against the tokens-per-minute limit when the request arrives.
        self.token_estimate = self.prompt_estimate + (req.max_tokens or DEFAULT_MAX_TOKENS_ESTIMATE)
        self.started = 0.0  # set when the first attempt gets its permit
        self.attempts = 0
        self.encoding_faults = 0

    async def attempt(self) -> ChatResult:
        """One HTTP attempt: a ChatResult, _Retryable, or ProviderError (not to be retried)."""
        self.attempts += 1
        p, cfg = self.p, self.p.config
        cap = cfg.max_response_bytes
        permit = await p.limiter.acquire(self.token_estimate)
        attempt_started = time.perf_counter()
        if self.attempts == 1:
            self.started = attempt_started
        status: int | None = None
        try:
            request = httpx.Request(
                "POST",
                p.url,  # type: ignore[arg-type]  # chat() checked it
                content=self.body,
                headers=self.headers,
                extensions={"timeout": p.timeout},
            )
            # The deadline covers reading the body too: a trickled answer cannot hold a slot.
            async with asyncio.timeout(p.deadline_s):
                response = await self.transport.handle_async_request(request)
                try:
                    status = response.status_code
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug('HTTP Request: POST %s "HTTP/1.1 %d"', request.url, status)
                    raw, complete = await read_capped(
                        response, cap if status == 200 else ERROR_BODY_BYTES
                    )
                finally:
                    # Unread bytes (a body over the cap) make aiohttp drop the connection
                    # rather than reuse it.
                    await response.aclose()
        # RequestError, not only TransportError: a body that fails to decode (a broken gzip
        # stream) is httpx.DecodingError, and it is as transient as a dropped connection.
        except (httpx.RequestError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _Retryable(describe_transport_error(exc, cfg), None, None) from None
        finally:
            permit.release()
            observe_provider_attempt(
                self.req.provider, self.req.model, status, time.perf_counter() - attempt_started
            )

        if status == 200:
            if not complete:
                raise ProviderError(
                    f"malformed response from {self.req.provider!r} (HTTP 200): response body "
                    f"over {cap} bytes (max_response_bytes)",
                    retryable=False,
                    status=200,
                    attempts=self.attempts,
                )
            try:
                parsed = (
                    parse_anthropic_message(raw)
                    if cfg.kind == "anthropic"
                    else parse_completion(raw)
                )
            except MalformedBody as exc:
                last = f"malformed response from {self.req.provider!r} (HTTP 200): {exc.reason}"
                if exc.kind == "encoding":
                    self.encoding_faults += 1
                if exc.kind == "shape" or self.encoding_faults > ENCODING_RETRIES:
                    n = self.attempts
                    raise ProviderError(
                        last if n == 1 else f"{last} after {n} attempts",
                        retryable=False,
                        status=200,
                        attempts=n,
                    ) from None
                raise _Retryable(last, 200, None) from None
            result = self.pool._result(
                self.req, parsed, self.prompt_estimate, self.attempts, self.started
            )
            await permit.settle(result.prompt_tokens + result.completion_tokens)
            return result
        if status in _RETRYABLE_STATUS or status >= 500:
            detail = server_words(raw)
            raise _Retryable(
                f"HTTP {status}" + (f" ({detail})" if detail else ""),
                status,
                parse_retry_after(response.headers),
            )
        raise ProviderError(
            describe_failure(response, raw, cfg, self.secret),
            retryable=False,
            status=status,
            attempts=self.attempts,
        )
