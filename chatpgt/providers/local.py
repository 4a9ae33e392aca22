"""The ``local`` provider: a transformers causal LM running inside this (worker) process.

A request's ``model`` is a model directory (a registered or trained model's path, anything
``AutoModelForCausalLM.from_pretrained`` reads from disk) or the alias ``smollm2-135m-instruct``,
the bundled SmolLM2-135M-Instruct (see :mod:`chatpgt.providers.smollm2`). Each model is loaded
once per process, on first use, and shared by every :class:`LocalProvider` of the process.

Concurrent requests to one model are batched: the first request waits ``batch_wait_ms`` for
others (and requests that arrive while a batch runs form the next one), then up to
``max_batch_size`` of them run as one left-padded ``generate`` call, or one forward pass for
:meth:`LocalProvider.judge_ab`. All model work runs on one background thread per process, so the
event loop never blocks and two batches never fight over the CPU.

torch and transformers are imported lazily, on the first request: importing this module is
cheap, and the API process (which never makes local requests) never loads them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chatpgt.providers.local_models import (
    LoadedModel,
    _compute_executor,
    load_model,
    resolve_model,
)
from chatpgt.providers.smollm2 import LocalModelUnavailable
from chatpgt.providers.types import (
    ABResult,
    ChatRequest,
    ChatResult,
    LocalOptions,
    ProviderError,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_ERROR_DETAIL_CHARS = 300

# (input tokens, output tokens) -> US dollars, for one model.
PriceFn = Callable[[str, int, int], Decimal]


# --- batches -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    kind: Literal["generate", "score"]
    messages: list[dict[str, str]]
    max_tokens: int
    # (kind, do_sample, temperature, top_p): only jobs with equal keys share a batch.
    key: tuple[Any, ...]
    future: asyncio.Future[Any]
    # Text appended after the generation prompt (judge_ab's answer_prefix).
    prefix: str = ""
    # Called on the compute thread with the text generated so far, as it grows (streaming).
    on_text: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class _Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True, slots=True)
class _Scored:
    p_a: float
    p_b: float
    mass: float
    prompt_tokens: int


@dataclass(slots=True)
class LocalStats:
    """Counters of one provider: requests submitted, batches run (``batched_requests`` /
    batches is the mean batch size), and the largest batch seen."""

    requests: int = 0
    generate_batches: int = 0
    score_batches: int = 0
    batched_requests: int = 0
    largest_batch: int = 0


def _prompt_ids(loaded: LoadedModel, messages: list[dict[str, str]], prefix: str = "") -> list[int]:
    """The templated prompt's tokens (then ``prefix``'s); ProviderError(retryable=False) when it
    cannot be built (the template refuses the messages) or does not fit the model's context."""
    tokenizer = loaded.tokenizer
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text += prefix
        ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    except Exception as exc:  # jinja errors and the template's own raise_exception()
        detail = f"{type(exc).__name__}: {exc}"[:_ERROR_DETAIL_CHARS]
        raise ProviderError(
            f"chat template of local model {str(loaded.path)!r} refused the messages: {detail}",
            retryable=False,
        ) from None
    if loaded.max_positions is not None and len(ids) >= loaded.max_positions:
        raise ProviderError(
            f"prompt of {len(ids)} tokens does not fit the context of "
            f"{loaded.max_positions} tokens of local model {str(loaded.path)!r}",
            retryable=False,
        )
    return ids


def _left_pad(rows: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


# A streaming row's text is decoded and handed over at most this often (decoding is O(length)).
STREAM_EVERY_S = 0.25


def _decode(loaded: LoadedModel, tokens: list[int]) -> tuple[str, int, str]:
    """(text, tokens counted, finish reason) of generated tokens: cut at the first end-of-text
    token, which is counted as vLLM counts it."""
    stop = next((k for k, t in enumerate(tokens) if t in loaded.eos_ids), None)
    if stop is None:
        content, counted, reason = tokens, len(tokens), "length"
    else:
        content, counted, reason = tokens[:stop], stop + 1, "stop"
    return loaded.tokenizer.decode(content, skip_special_tokens=True), counted, reason


class _RowStreamer:
    """A transformers streamer for a batch: after each decoding step it hands each streaming
    row (``rows``: batch row -> callback) its text so far, at most every ``every_s`` seconds
    (and once at the end), cut to the row's token limit. ``generate`` first puts the prompt,
    which is skipped."""

    def __init__(
        self,
        loaded: LoadedModel,
        rows: dict[int, tuple[Callable[[str], None], int]],
        every_s: float,
    ) -> None:
        self.loaded = loaded
        self.rows = rows
        self.every_s = every_s
        self.tokens: dict[int, list[int]] = {r: [] for r in rows}
        self.done: set[int] = set()
        self.last = 0.0
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        step = value.reshape(-1).tolist()
        for r, tokens in self.tokens.items():
            if r not in self.done:
                tokens.append(step[r])
                if step[r] in self.loaded.eos_ids:
                    self.done.add(r)
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._hand_over()

    def end(self) -> None:
        self._hand_over()

    def _hand_over(self) -> None:
        for r, (callback, limit) in self.rows.items():
            try:
                callback(_decode(self.loaded, self.tokens[r][:limit])[0])
            except Exception:  # a listener's failure never stops the batch
                log.exception("a streaming callback failed")


def _run_generate(loaded: LoadedModel, jobs: list[_Job]) -> list[_Generated | ProviderError]:
    """One left-padded ``generate`` for jobs of equal sampling settings (runs on the thread)."""
    import torch
    from transformers import GenerationConfig

    out: list[_Generated | ProviderError | None] = [None] * len(jobs)
    rows: list[list[int]] = []
    limits: list[int] = []
    index: list[int] = []
    for i, job in enumerate(jobs):
        try:
            ids = _prompt_ids(loaded, job.messages, job.prefix)
        except ProviderError as exc:
            out[i] = exc
            continue
        room = job.max_tokens
        if loaded.max_positions is not None:
            room = min(room, loaded.max_positions - len(ids))
        rows.append(ids)
        limits.append(room)
        index.append(i)
    if rows:
        _, do_sample, temperature, top_p = jobs[0].key
        new_tokens_max = max(limits)
        if loaded.max_positions is not None:
            # Left padding makes every row as long as the longest prompt; a short prompt batched
            # with one near the context limit may get fewer tokens ("length") than it asked for.
            new_tokens_max = min(new_tokens_max, loaded.max_positions - max(map(len, rows)))
        config = GenerationConfig(
            max_new_tokens=new_tokens_max,
            do_sample=do_sample,
            pad_token_id=loaded.pad_id,
            eos_token_id=sorted(loaded.eos_ids),
        )
        if do_sample:
            # OpenAI semantics: no top-k cut, only temperature and nucleus.
            config.temperature = temperature
            config.top_p = top_p
            config.top_k = 0
        input_ids, mask = _left_pad(rows, loaded.pad_id, loaded.device)
        streaming = {
            row: (callback, limits[row])
            for row, i in enumerate(index)
            if (callback := jobs[i].on_text) is not None
        }
        streamer = _RowStreamer(loaded, streaming, STREAM_EVERY_S) if streaming else None
        with torch.inference_mode():
            generated = loaded.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                streamer=streamer,
            )
        new_tokens = generated[:, input_ids.shape[1] :].tolist()
        for row, prompt, limit, i in zip(new_tokens, rows, limits, index, strict=True):
            text, counted, reason = _decode(loaded, row[:limit])
            out[i] = _Generated(text, len(prompt), counted, reason)
    return [o if o is not None else ProviderError("no result", retryable=True) for o in out]


def _run_score(loaded: LoadedModel, jobs: list[_Job]) -> list[_Scored | ProviderError]:
    """One forward pass over left-padded prompts; the last position's A/B probabilities."""
    import torch

    out: list[_Scored | ProviderError | None] = [None] * len(jobs)
    rows: list[list[int]] = []
    index: list[int] = []
    for i, job in enumerate(jobs):
        try:
            ids = _prompt_ids(loaded, job.messages, job.prefix)
        except ProviderError as exc:
            out[i] = exc
            continue
        rows.append(ids)
        index.append(i)
    if rows:
        input_ids, mask = _left_pad(rows, loaded.pad_id, loaded.device)
        # generate() derives positions from the mask; a plain forward pass must be told, or
        # left-padded rows would see shifted positions and score differently in a batch.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = loaded.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                logits_to_keep=1,
                use_cache=False,
            ).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)
        p_a = probs[:, loaded.letter_ids["A"]].sum(-1).tolist()
        p_b = probs[:, loaded.letter_ids["B"]].sum(-1).tolist()
        for a, b, ids, i in zip(p_a, p_b, rows, index, strict=True):
            mass = a + b
            if not math.isfinite(mass) or mass <= 0:
                out[i] = ProviderError(
                    f"local model {str(loaded.path)!r} gives no probability to 'A' or 'B'",
                    retryable=False,
                    prompt_tokens=len(ids),
                )
            else:
                out[i] = _Scored(a / mass, b / mass, mass, len(ids))
    return [o if o is not None else ProviderError("no result", retryable=True) for o in out]


class _Batcher:
    """Collects one model's jobs and runs them in batches on the compute thread."""

    def __init__(self, loaded: LoadedModel, options: LocalOptions, stats: LocalStats) -> None:
        self.loaded = loaded
        self.options = options
        self.stats = stats
        self.pending: deque[_Job] = deque()
        self.running: list[_Job] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def submit(self, job: _Job) -> None:
        self.pending.append(job)
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"chatpgt-local-batcher:{self.loaded.path.name}"
            )

    async def aclose(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        # A batch still on the compute thread finishes there; its waiters are told now.
        for job in [*self.running, *self.pending]:
            if not job.future.done():
                job.future.set_exception(ProviderError("local provider closed", retryable=True))
        self.running = []
        self.pending.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        size = self.options.max_batch_size
        wait_s = self.options.batch_wait_ms / 1000
        while True:
            while not self.pending:
                self.wake.clear()
                await self.wake.wait()
            if len(self.pending) < size and wait_s > 0:
                deadline = loop.time() + wait_s
                while len(self.pending) < size:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), remaining)
                    except TimeoutError:
                        break
            batch = self._take(size)
            if not batch:
                continue
            run = _run_generate if batch[0].kind == "generate" else _run_score
            if batch[0].kind == "generate":
                self.stats.generate_batches += 1
            else:
                self.stats.score_batches += 1
            self.stats.batched_requests += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            self.running = batch
            try:
                results: list[Any] = await loop.run_in_executor(
                    _compute_executor(), run, self.loaded, batch
                )
            except Exception as exc:  # every waiter must hear about it
                detail = f"{type(exc).__name__}: {exc}"[:_ERROR_DETAIL_CHARS]
                error = ProviderError(
                    f"local model {str(self.loaded.path)!r} failed: {detail}", retryable=True
                )
                results = [error] * len(batch)
            for job, result in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
            self.running = []

    def _take(self, size: int) -> list[_Job]:
        """Up to ``size`` live jobs sharing the first live job's key, in arrival order."""
        while self.pending and self.pending[0].future.done():
            self.pending.popleft()  # its caller went away
        if not self.pending:
            return []
        key = self.pending[0].key
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        while self.pending:
            job = self.pending.popleft()
            if job.future.done():
                continue
            if len(batch) < size and job.key == key:
                batch.append(job)
            else:
                rest.append(job)
        self.pending = rest
        return batch


class LocalProvider:
    """One ``local`` provider: chat and A/B judging on transformers models in this process.

    Create one per provider name on the event loop that uses it; ``await aclose()`` stops its
    batching tasks. Models are loaded once per process and shared between providers; batching
    is per provider and model. ``price`` gives the cost of a call (0 when not given).
    """

    def __init__(
        self,
        name: str,
        options: LocalOptions | None = None,
        *,
        price: PriceFn | None = None,
    ) -> None:
        self.name = name
        self.options = options or LocalOptions()
        self._price = price
        self._batchers: dict[str, _Batcher] = {}
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}
        self._paths: dict[str, Path] = {}
        self.stats = LocalStats()

    async def chat(
        self, req: ChatRequest, on_text: Callable[[str], None] | None = None
    ) -> ChatResult:
        """Generate an answer to ``req.messages`` with the chat template applied.

        Sampling follows the OpenAI API: ``temperature`` (default 1.0; 0 means greedy) and
        ``top_p`` (default 1.0), no top-k; ``max_tokens`` defaults to the options'
        ``default_max_tokens`` and is cut to the model's context. ``json_mode`` and ``extra``
        are ignored. Token counts are exact: the templated prompt, and the generated tokens
        including the end-of-text token when the model stopped (``finish_reason`` "stop") or
        ``max_tokens`` of them ("length"). ``latency_ms`` includes loading the model on first
        use and waiting for a batch. ``on_text``, when given, is called from the compute
        thread with the text generated so far as it grows (every ``STREAM_EVERY_S`` at most,
        and once at the end); it must be quick and thread-safe.

        Raises ProviderError: ``retryable=False`` for a model that cannot be found or loaded
        or a prompt longer than the context; ``retryable=True`` when generation itself failed
        (for example out of GPU memory).
        """
        started = time.perf_counter()
        temperature = 1.0 if req.temperature is None else float(req.temperature)
        top_p = 1.0 if req.top_p is None else float(req.top_p)
        if temperature < 0 or not 0 < top_p <= 1:
            raise ProviderError(
                f"invalid sampling settings: temperature={temperature}, top_p={top_p}",
                retryable=False,
            )
        max_tokens = req.max_tokens or self.options.default_max_tokens
        do_sample = temperature > 0
        key = ("generate", True, temperature, top_p) if do_sample else ("generate", False, 0.0, 1.0)
        generated: _Generated = await self._submit(
            req, "generate", key, max_tokens, on_text=on_text
        )
        cost = self._cost(req.model, generated.prompt_tokens, generated.completion_tokens)
        return ChatResult(
            text=generated.text,
            prompt_tokens=generated.prompt_tokens,
            completion_tokens=generated.completion_tokens,
            cost_usd=cost,
            latency_ms=int((time.perf_counter() - started) * 1000),
            finish_reason=generated.finish_reason,
            attempts=1,
        )

    async def judge_ab(self, req: ChatRequest) -> ABResult:
        """The probabilities the model gives to answering "A" or "B" next, normalised.

        One forward pass over ``req.messages`` with the chat template and generation prompt
        applied; nothing is generated (``completion_tokens`` is 0) and sampling settings are
        ignored. "A" counts the tokens "A" and " A" (likewise "B"). The prompt should ask for a
        one-letter answer; ``mass`` tells how far the model followed it. A string in
        ``req.extra["answer_prefix"]`` is put in the model's mouth after the generation prompt,
        so the letter is scored after it (for example ``'{"winner": "'`` with a JSON judge
        prompt: small models then put most of their probability on the letters).
        Deterministic for a given prompt up to float rounding between batch shapes. Errors as
        for :meth:`chat`.
        """
        started = time.perf_counter()
        prefix = (req.extra or {}).get("answer_prefix") or ""
        if not isinstance(prefix, str):
            raise ProviderError("answer_prefix must be a string", retryable=False)
        scored: _Scored = await self._submit(req, "score", ("score",), 0, prefix)
        return ABResult(
            p_a=scored.p_a,
            p_b=scored.p_b,
            prompt_tokens=scored.prompt_tokens,
            completion_tokens=0,
            cost_usd=self._cost(req.model, scored.prompt_tokens, 0),
            latency_ms=int((time.perf_counter() - started) * 1000),
            attempts=1,
            mass=scored.mass,
        )

    async def preload(self, model: str) -> LoadedModel:
        """Resolve and load ``model`` now (for example at worker start-up), not on first use."""
        return (await self._batcher(model)).loaded

    async def aclose(self) -> None:
        """Stop the batching tasks; requests still waiting fail with a retryable error."""
        batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            await batcher.aclose()

    async def _submit(
        self,
        req: ChatRequest,
        kind: Literal["generate", "score"],
        key: tuple[Any, ...],
        n: int,
        prefix: str = "",
        on_text: Callable[[str], None] | None = None,
    ) -> Any:
        batcher = await self._batcher(req.model)
        self.stats.requests += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        batcher.submit(_Job(kind, req.messages, n, key, future, prefix, on_text))
        return await future

    async def _batcher(self, model: str) -> _Batcher:
        batcher = self._batchers.get(model)
        if batcher is not None:
            return batcher
        # One load per model however many requests arrive during it; shielded so that a
        # cancelled caller does not cancel the load the others wait for.
        loading = self._loading.get(model)
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(self._load, model))
            self._loading[model] = loading
        try:
            loaded = await asyncio.shield(loading)
        except LocalModelUnavailable as exc:
            self._loading.pop(model, None)  # a later call tries again
            raise ProviderError(f"{self.name!r}: {exc}", retryable=False) from None
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            self._loading.pop(model, None)
            detail = f"{type(exc).__name__}: {exc}"[:_ERROR_DETAIL_CHARS]
            raise ProviderError(
                f"{self.name!r}: cannot load local model {model!r}: {detail}", retryable=False
            ) from None
        batcher = self._batchers.get(model)
        if batcher is None:
            batcher = _Batcher(loaded, self.options, self.stats)
            self._batchers[model] = batcher
            self._loading.pop(model, None)
        return batcher

    def _load(self, model: str) -> LoadedModel:
        path = self._paths.get(model)
        if path is None:
            path = resolve_model(model, self.options.cache_dir)
            self._paths[model] = path
        return load_model(path, self.options)

    def _cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
        if self._price is None:
            return Decimal(0)
        return self._price(model, prompt_tokens, completion_tokens)
