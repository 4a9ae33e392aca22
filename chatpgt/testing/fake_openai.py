"""A fake OpenAI-compatible chat-completions server for tests and benchmarks.

Run it as a process::

    python -m chatpgt.testing.fake_openai --host 127.0.0.1 --port 8999 --latency-ms 200

It speaks enough of the OpenAI API for ChatPGT (``GET /v1/models``, ``POST /v1/chat/completions``)
and injects faults on demand. Tests change the fault profile while it runs:

- ``POST /_control`` with a JSON object of profile fields (the flag names with underscores, e.g.
  ``{"rate_5xx": 1.0}``) updates the profile and answers with the whole new profile. Besides the
  flags it takes ``script``: a list of outcomes forced on the next requests, in order, before any
  random draw (``"ok"``, ``"500"``, ``"502"``, ``"503"``, ``"429"``, ``"timeout"``, ``"empty"``,
  ``"malformed"``, ``"invalid_body"`` or one of the body faults below), so a test can say "fail
  twice, then answer" exactly. An entry prefixed ``judge:`` or ``writer:`` (``"judge:no_choices"``)
  is kept for the next request to a judge model, or to any other model, and skipped by the rest.
  It also takes ``essays``: ``{model: text}``, writer models that answer every request with
  that exact text (a copy of a known essay, say); ``{}`` or a reset clears them.
- ``POST /_control/reset`` restores the start-up profile, clears the script, re-seeds the random
  source, zeroes the statistics and releases requests that are hanging in a simulated timeout.
- ``GET /_control`` shows the profile; ``GET /_stats`` shows the counters; ``GET /_requests``
  lists the ``{"model", "messages"}`` of the last :data:`RECORDED_REQUESTS` valid requests to
  writer models (not judges), oldest first, so a test can compare what a model was asked with
  what the project says it asked (cleared by reset).

Key echo faults (:data:`KEY_ECHO_FAULTS`, script only): ``echo_key_400``, ``echo_key_401`` and
``echo_key_500`` answer with that status and an error message that quotes the request's whole
``Authorization`` header, as a misbehaving proxy does (and OpenAI's 401 does in part);
``echo_key_content`` answers 200 with the header quoted at the end of the essay or verdict text.

Body faults (:data:`BODY_FAULTS`) break an otherwise good 200 answer of any model, essay or
verdict: ``truncated_body`` (the JSON document cut in half, with a matching Content-Length),
``no_choices`` (valid JSON without ``choices``), ``no_message`` (``choices[0]`` carries ``text``
instead of ``message``), ``content_not_string`` (``message.content`` is an object),
``non_utf8`` (the raw bytes 0xFF 0xFE inside the content string), ``latin1_body`` (the body is
encoded in Latin-1 but declared UTF-8) and ``huge_body`` (a chat completion whose content is
``huge_body_mb`` megabytes, streamed in chunks without a Content-Length, so the server never holds
it). ``rate_malformed_body`` draws one of them, in rotation, on that share of the requests that
no status fault took.

Models whose name starts with ``judge`` act as a pairwise judge: the user message carries the two
essays inside ``<essay_a>``/``<essay_b>`` tags, each essay gets a score from a hash of its text,
and the higher score wins, so the verdict is deterministic and consistent across both orders.
Asked for ``max_tokens=1``, a judge answers with the winning letter alone, and with
``top_logprobs`` the first token's alternatives hold "A"/" A" and "B"/" B" with probabilities
derived from the verdict's confidence (:func:`chatpgt.testing.fake_content.ab_probabilities`),
as a logprob judge reads them. What the server says (words, verdicts, logprobs, the request
checks) is in :mod:`chatpgt.testing.fake_content`; this module serves it and injects the faults.
Every other model writes a pseudo-random essay that starts with the model name and the first line
of the user prompt.

Built on aiohttp with no per-request logging so that one process on two cores sustains more than a
thousand concurrent requests.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import math
import os
import random
import re
import signal
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import orjson
from aiohttp import web

from chatpgt.testing.fake_batches import FakeBatches, add_routes
from chatpgt.testing.fake_content import (
    MALFORMED_KINDS,
    WORDS,
    anthropic_message,
    judge_first_token_logprobs,
    judge_verdict,
    logprobs_for,
    malformed_judge_content,
    validate_anthropic_request,
    validate_request,
    validate_top_logprobs,
    verdict_json,
)

MODELS = ("writer-a", "writer-b", "judge", "judge-strict", "gpt-4o-mini")

_ESSAY_A = re.compile(r"<essay_a>(.*?)</essay_a>", re.DOTALL)
_ESSAY_B = re.compile(r"<essay_b>(.*?)</essay_b>", re.DOTALL)

# Faults in the HTTP body of a 200 answer (any model); script outcomes and stats names alike.
BODY_FAULTS = (
    "truncated_body",
    "no_choices",
    "no_message",
    "content_not_string",
    "non_utf8",
    "latin1_body",
    "huge_body",
)
# How many writer requests GET /_requests keeps.
RECORDED_REQUESTS = 1000
# A provider or proxy that quotes the request's whole Authorization header in its error message,
# answering with this status: what secret redaction (chatpgt.redact) must catch.
KEY_ECHO_FAULTS = {"echo_key_400": 400, "echo_key_401": 401, "echo_key_500": 500}
# A 200 answer (essay or verdict) whose text quotes the request's Authorization header, as a
# prompt-injected model or a misbehaving proxy could.
KEY_IN_CONTENT = "echo_key_content"
# Outcomes a script may force; the same names appear in /_stats["by_outcome"].
SCRIPT_OUTCOMES = frozenset(
    {
        *("ok", "500", "502", "503", "429", "timeout", "empty", "malformed", "invalid_body"),
        *BODY_FAULTS,
        *KEY_ECHO_FAULTS,
        KEY_IN_CONTENT,
    }
)
_SCRIPT_SCOPES = ("judge", "writer")
_HUGE_CHUNK = 64 * 1024


@dataclass(slots=True)
class Profile:
    """The fault profile; every field can be set by a flag and by POST /_control."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_5xx: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    rate_timeout: float = 0.0
    hang_s: float = 30.0
    rate_malformed_judge: float = 0.0
    rate_empty: float = 0.0
    rate_malformed_body: float = 0.0
    huge_body_mb: float = 50.0
    position_bias: float = 0.0
    require_key_env: str | None = None
    # The Batch API (chatpgt.testing.fake_batches): seconds until a batch completes, the share
    # of its requests that fail, of batches that expire half done, of files rejected.
    batch_delay_s: float = 0.0
    batch_fail_rate: float = 0.0
    batch_expire: float = 0.0
    batch_reject: float = 0.0
    batch_download_delay_s: float = 0.0


_RATE_FIELDS = frozenset(
    {
        "rate_5xx",
        "rate_429",
        "rate_timeout",
        "rate_malformed_judge",
        "rate_empty",
        "rate_malformed_body",
        "position_bias",
        "batch_fail_rate",
        "batch_expire",
        "batch_reject",
    }
)
_PROFILE_FIELDS = {f.name for f in fields(Profile)}


class ControlError(ValueError):
    """A /_control body that cannot be applied; answered with 400."""


def apply_control(profile: Profile, body: dict[str, Any]) -> Profile:
    """A copy of ``profile`` with ``body``'s fields applied; ControlError names a bad field."""
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("script", "essays"):
            continue
        if key not in _PROFILE_FIELDS:
            raise ControlError(f"unknown control field {key!r}")
        if key == "require_key_env":
            if value is not None and not isinstance(value, str):
                raise ControlError("require_key_env must be a string or null")
            changes[key] = value or None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ControlError(f"{key} must be a number")
        if value < 0 or (key in _RATE_FIELDS and value > 1):
            raise ControlError(f"{key} out of range: {value}")
        changes[key] = float(value)
    return replace(profile, **changes)


def _error_body(message: str, type_: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _error(
    status: int, message: str, type_: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_error_body(message, type_),
        status=status,
        headers=headers,
        content_type="application/json",
    )


class FakeOpenAI:
    """The server's state: start-up profile, live profile, script, random source, statistics."""

    def __init__(self, profile: Profile, seed: int | None = None) -> None:
        self.start_profile = profile
        self.profile = replace(profile)
        self.seed = seed
        self.rng = random.Random(seed)
        self.script: list[str] = []
        self.essays: dict[str, str] = {}
        self._malformed = itertools.cycle(MALFORMED_KINDS)
        self._body_faults = itertools.cycle(BODY_FAULTS)
        # Bumped by reset: requests from an older epoch neither count as in flight nor keep hanging.
        self.epoch = 0
        self._release = asyncio.Event()
        self.batch_api: FakeBatches | None = None
        self._zero_stats()

    def _zero_stats(self) -> None:
        self.total = 0
        self.by_outcome: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.json_mode = 0
        self.in_flight = 0
        self.max_concurrent = 0
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECORDED_REQUESTS)
        if self.batch_api is not None:
            self.batch_api.reset()

    def reset(self) -> None:
        self.profile = replace(self.start_profile)
        self.script.clear()
        self.essays.clear()
        self.rng = random.Random(self.seed)
        self._malformed = itertools.cycle(MALFORMED_KINDS)
        self._body_faults = itertools.cycle(BODY_FAULTS)
        self.epoch += 1
        self._release.set()
        self._release = asyncio.Event()
        self._zero_stats()

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_outcome": dict(self.by_outcome),
            "by_model": dict(self.by_model),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "json_mode": self.json_mode,
            "in_flight": self.in_flight,
            "max_concurrent": self.max_concurrent,
            **(self.batch_api.stats() if self.batch_api is not None else {}),
        }

    # --- handlers -----------------------------------------------------------------------------

    async def get_requests(self, request: web.Request) -> web.Response:
        return _json(list(self.requests))

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODELS]
        return _json({"object": "list", "data": data})

    async def get_control(self, request: web.Request) -> web.Response:
        return _json({**asdict(self.profile), "script": list(self.script)})

    async def post_control(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ControlError("body must be a JSON object")
            self.profile = apply_control(self.profile, body)
            script = body.get("script")
            if script is not None:
                if not isinstance(script, list) or not all(map(_valid_script_entry, script)):
                    raise ControlError(
                        f"script must be a list of {sorted(SCRIPT_OUTCOMES)}, each optionally "
                        f"prefixed with one of {[s + ':' for s in _SCRIPT_SCOPES]}"
                    )
                self.script = [str(s) for s in script]
            essays = body.get("essays")
            if essays is not None:
                if not isinstance(essays, dict) or not all(
                    isinstance(v, str) and v for v in essays.values()
                ):
                    raise ControlError("essays must be an object of model: non-empty text")
                self.essays = {str(k): v for k, v in essays.items()}
        except (orjson.JSONDecodeError, ControlError) as exc:
            return _error(400, str(exc), "invalid_request_error")
        return _json({**asdict(self.profile), "script": list(self.script)})

    async def post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json({**asdict(self.profile), "script": []})

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, anthropic=False)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic's Messages API (``POST /v1/messages``): the same models, faults, script
        and statistics as chat completions, in Anthropic's shapes (see :func:`_anthropic`)."""
        return await self._serve(request, anthropic=True)

    async def _serve(self, request: web.Request, *, anthropic: bool) -> web.StreamResponse:
        epoch = self.epoch
        self.total += 1
        self.in_flight += 1
        if self.in_flight > self.max_concurrent:
            self.max_concurrent = self.in_flight
        try:
            outcome, status, response = await self._chat(request, anthropic)
            if anthropic and status != 200 and isinstance(response, web.Response):
                response = _anthropic_error(response)
        finally:
            if epoch == self.epoch:
                self.in_flight -= 1
        if epoch == self.epoch:
            self.by_outcome[outcome] += 1
            self.by_status[status] += 1
        return response

    async def _chat(
        self, request: web.Request, anthropic: bool = False
    ) -> tuple[str, int, web.StreamResponse]:
        profile = self.profile
        key_header = "x-api-key" if anthropic else "Authorization"
        if profile.require_key_env is not None:
            expected = ("" if anthropic else "Bearer ") + os.environ.get(
                profile.require_key_env, ""
            )
            given = request.headers.get(key_header, "")
            # An unset variable on the server side means no key can be right.
            if not os.environ.get(profile.require_key_env) or not hmac.compare_digest(
                given.encode(), expected.encode()
            ):
                return (
                    "unauthorized",
                    401,
                    _error(401, "Incorrect API key provided.", "invalid_request_error"),
                )

        max_tokens: int | None
        try:
            body = orjson.loads(await request.read())
            if anthropic:
                if not request.headers.get("anthropic-version"):
                    raise ValueError("anthropic-version: header is required")
                model, messages, max_tokens = validate_anthropic_request(body)
                top_logprobs = 0
            else:
                model, messages, max_tokens = validate_request(body)
                top_logprobs = validate_top_logprobs(body)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return "bad_request", 400, _error(400, str(exc), "invalid_request_error")

        self.by_model[model] += 1
        if not model.startswith("judge"):
            self.requests.append({"model": model, "messages": messages})
        rf = body.get("response_format")
        if isinstance(rf, dict) and rf.get("type") == "json_object":
            self.json_mode += 1

        rng = self.rng
        is_judge = model.startswith("judge")
        forced = self._take_scripted(is_judge)
        # Every fault is drawn on every request, so one rate never shifts another's draws.
        draw_429, draw_5xx, draw_timeout, draw_empty, draw_body = (rng.random() for _ in range(5))
        if profile.latency_ms or profile.jitter_ms:
            delay = profile.latency_ms + rng.random() * profile.jitter_ms
            await asyncio.sleep(delay / 1000)

        if forced == "429" or (forced is None and draw_429 < profile.rate_429):
            retry_after = profile.retry_after_s
            headers = {
                "Retry-After": str(math.ceil(retry_after)),
                "retry-after-ms": str(int(retry_after * 1000)),
            }
            message = "Rate limit reached. Please try again later."
            return "429", 429, _error(429, message, "rate_limit_error", headers)
        if forced in ("500", "502", "503") or (forced is None and draw_5xx < profile.rate_5xx):
            status = int(forced) if forced else rng.choice((500, 502, 503))
            return "5xx", status, _error(status, "The server had an error.", "server_error")
        if forced in KEY_ECHO_FAULTS:
            status = KEY_ECHO_FAULTS[forced]
            given = request.headers.get(key_header, "")
            message = f"Request refused; headers received: {{'{key_header}': '{given}'}}"
            return forced, status, _error(status, message, "invalid_request_error")
        if forced == "timeout" or (forced is None and draw_timeout < profile.rate_timeout):
            release = self._release
            try:
                await asyncio.wait_for(release.wait(), profile.hang_s)
            except TimeoutError:
                pass
            return "timeout", 504, _error(504, "Gateway timeout.", "timeout")
        if forced == "invalid_body":
            return "invalid_body", 200, web.Response(text="<html>upstream hiccup</html>")

        body_fault: str | None = None
        if forced in BODY_FAULTS:
            body_fault = forced
        elif forced is None and draw_body < profile.rate_malformed_body:
            body_fault = next(self._body_faults)
        empty = forced == "empty" or (forced is None and draw_empty < profile.rate_empty)
        malformed = False
        finish_reason = "stop"
        letter_verdict: tuple[str, int] | None = None
        if empty:
            content = ""
        elif is_judge:
            malformed = forced == "malformed" or (
                forced is None and rng.random() < profile.rate_malformed_judge
            )
            if malformed:
                content = malformed_judge_content(next(self._malformed))
            else:
                verdict = self._verdict(messages, rng, profile.position_bias)
                if verdict is None:
                    message = "judge prompt needs <essay_a>...</essay_a> and <essay_b>...</essay_b>"
                    return "bad_request", 400, _error(400, message, "invalid_request_error")
                if max_tokens == 1:
                    # One token is all a real judge can say: the letter of its verdict.
                    letter_verdict = verdict
                    content = verdict[0]
                    finish_reason = "length"
                else:
                    content = verdict_json(*verdict)
        elif model in self.essays:
            content = self.essays[model]
        else:
            content, finish_reason = self._essay(model, messages, max_tokens, rng)
        if forced == KEY_IN_CONTENT:
            given = request.headers.get(key_header, "")
            content += f"\n\n(request headers: {key_header}: {given})"

        prompt_chars = sum(len(m.get("content") or "") for m in messages)
        prompt_tokens = max(1, prompt_chars // 4)
        completion_tokens = len(content.split())
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
            "logprobs": None,
        }
        if body.get("logprobs"):
            entries = logprobs_for(content, top_logprobs)
            if letter_verdict is not None and top_logprobs:
                entries[0] = judge_first_token_logprobs(*letter_verdict, top_logprobs)
            choice["logprobs"] = {"content": entries}
        payload = {
            "id": f"chatcmpl-{rng.getrandbits(64):016x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if anthropic:
            payload = anthropic_message(payload)
        if body_fault is not None:
            if body_fault == "huge_body":
                return body_fault, 200, await self._huge_body(request, payload)
            broken = _broken_anthropic_body if anthropic else _broken_body
            return body_fault, 200, broken(body_fault, payload)
        outcome = "empty" if empty else "malformed" if malformed else "ok"
        if forced == KEY_IN_CONTENT:
            outcome = KEY_IN_CONTENT
        return outcome, 200, _json(payload)

    def _take_scripted(self, is_judge: bool) -> str | None:
        """Pop the first script entry that applies to this request (see the module docstring)."""
        scope = "judge" if is_judge else "writer"
        for i, entry in enumerate(self.script):
            prefix, _, outcome = entry.rpartition(":")
            if not prefix or prefix == scope:
                del self.script[i]
                return outcome
        return None

    async def _huge_body(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        """Stream a chat completion whose content is ``huge_body_mb`` MB, chunk by chunk.

        No Content-Length (chunked), so a client cannot refuse it from the headers alone; a
        client that hangs up early ends the handler quietly.
        """
        if "choices" in payload:
            payload["choices"][0]["message"]["content"] = "@@HUGE@@"
        else:  # an Anthropic message
            payload["content"][0]["text"] = "@@HUGE@@"
        head, tail = orjson.dumps(payload).split(b"@@HUGE@@", 1)
        remaining = int(self.profile.huge_body_mb * 1024 * 1024)
        chunk = (b"lorem ipsum " * (_HUGE_CHUNK // 12 + 1))[:_HUGE_CHUNK]
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        try:
            await response.prepare(request)
            await response.write(head)
            while remaining > 0:
                piece = chunk if remaining >= len(chunk) else chunk[:remaining]
                await response.write(piece)
                remaining -= len(piece)
            await response.write(tail)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client hung up (as a client with a body cap should)
        return response

    def _verdict(
        self, messages: list[dict[str, Any]], rng: random.Random, bias: float
    ) -> tuple[str, int] | None:
        text = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
        found_a, found_b = _ESSAY_A.search(text), _ESSAY_B.search(text)
        if found_a is None or found_b is None:
            return None
        winner, confidence = judge_verdict(found_a.group(1), found_b.group(1))
        if bias and rng.random() < bias:
            winner = "A"
        return winner, confidence

    def _essay(
        self,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None,
        rng: random.Random,
    ) -> tuple[str, str]:
        prompt = ""
        for m in reversed(messages):
            if m.get("role") == "user":
                prompt = str(m.get("content") or "")
                break
        first_line = prompt.strip().split("\n", 1)[0][:200]
        header = f"{model}: {first_line}".split()
        target = rng.randint(150, 400)
        limit = target if max_tokens is None else min(max_tokens, target)
        finish_reason = "length" if max_tokens is not None and max_tokens < target else "stop"
        # A fresh nonce per sample: two samples of the same prompt differ.
        words_rng = random.Random(rng.getrandbits(64))
        body = words_rng.choices(WORDS, k=max(0, limit - len(header)))
        sentences = []
        for start in range(0, len(body), 12):
            chunk = body[start : start + 12]
            # Joined, not "first + ' ' + rest": a one-word chunk must stay one word.
            sentences.append(" ".join([chunk[0].capitalize(), *chunk[1:]]) + ".")
        words = header[:limit]
        text = " ".join(words)
        if sentences:
            text += "\n\n" + " ".join(sentences)
        return text, finish_reason


def _valid_script_entry(entry: Any) -> bool:
    if not isinstance(entry, str):
        return False
    prefix, _, outcome = entry.rpartition(":")
    return outcome in SCRIPT_OUTCOMES and (not prefix or prefix in _SCRIPT_SCOPES)


def _broken_body(kind: str, payload: dict[str, Any]) -> web.Response:
    """A 200 answer carrying ``payload`` broken as the body fault ``kind`` says."""
    choice = payload["choices"][0]
    content = choice["message"]["content"]
    if kind == "truncated_body":
        whole = orjson.dumps(payload)
        raw = whole[: len(whole) // 2]
    elif kind == "no_choices":
        raw = orjson.dumps({k: v for k, v in payload.items() if k != "choices"})
    elif kind == "no_message":
        # The legacy completions shape: text on the choice, no message.
        del choice["message"]
        choice["text"] = content
        raw = orjson.dumps(payload)
    elif kind == "content_not_string":
        choice["message"]["content"] = {"text": content}
        raw = orjson.dumps(payload)
    elif kind == "non_utf8":
        choice["message"]["content"] = "@@NON-UTF-8@@" + content
        raw = orjson.dumps(payload).replace(b"@@NON-UTF-8@@", b"\xff\xfe", 1)
    elif kind == "latin1_body":
        choice["message"]["content"] = "Caf\u00e9 cr\u00e8me. " + content
        # orjson writes non-ASCII as UTF-8; re-encode as Latin-1 while claiming UTF-8.
        raw = orjson.dumps(payload).decode().encode("latin-1", errors="replace")
    else:
        raise ValueError(f"unknown body fault {kind!r}")
    # Declared UTF-8 whatever the bytes are: the lie is the point of latin1_body.
    return web.Response(
        body=raw, status=200, headers={"Content-Type": "application/json; charset=utf-8"}
    )


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _anthropic_error(response: web.Response) -> web.Response:
    """An OpenAI-style error answer in Anthropic's shape (same status and headers)."""
    try:
        message = orjson.loads(response.body)["error"]["message"]  # type: ignore[arg-type]
    except (TypeError, KeyError, orjson.JSONDecodeError):
        return response  # not an error document (a hang's 504 page, say): as it is
    type_ = _ANTHROPIC_ERROR_TYPES.get(
        response.status, "api_error" if response.status >= 500 else "invalid_request_error"
    )
    headers = {k: v for k, v in response.headers.items() if k.lower().startswith("retry-after")}
    return _json(
        {"type": "error", "error": {"type": type_, "message": message}},
        status=response.status,
        headers=headers,
    )


def _broken_anthropic_body(kind: str, payload: dict[str, Any]) -> web.Response:
    """A 200 Messages answer broken as the body fault ``kind`` says (the chat-completion
    faults' counterparts: no content, content a string, a text block's text an object, ...)."""
    block = payload["content"][0]
    if kind == "truncated_body":
        whole = orjson.dumps(payload)
        raw = whole[: len(whole) // 2]
    elif kind == "no_choices":
        raw = orjson.dumps({k: v for k, v in payload.items() if k != "content"})
    elif kind == "no_message":
        payload["type"] = "completion"
        raw = orjson.dumps(payload)
    elif kind == "content_not_string":
        block["text"] = {"text": block["text"]}
        raw = orjson.dumps(payload)
    elif kind == "non_utf8":
        block["text"] = "@@NON-UTF-8@@" + block["text"]
        raw = orjson.dumps(payload).replace(b"@@NON-UTF-8@@", b"\xff\xfe", 1)
    elif kind == "latin1_body":
        block["text"] = "Caf\u00e9 cr\u00e8me. " + block["text"]
        raw = orjson.dumps(payload).decode().encode("latin-1", errors="replace")
    else:
        raise ValueError(f"unknown body fault {kind!r}")
    return web.Response(
        body=raw, status=200, headers={"Content-Type": "application/json; charset=utf-8"}
    )


def build_app(profile: Profile, seed: int | None = None) -> web.Application:
    """The aiohttp application; the state object is reachable as ``app["fake"]``."""
    fake = FakeOpenAI(profile, seed)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app["fake"] = fake
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_post("/v1/messages", fake.messages)
    fake.batch_api = add_routes(app, fake)
    app.router.add_get("/_control", fake.get_control)
    app.router.add_post("/_control", fake.post_control)
    app.router.add_post("/_control/reset", fake.post_reset)
    app.router.add_get("/_stats", fake.get_stats)
    app.router.add_get("/_requests", fake.get_requests)
    return app


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8999)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--rate-5xx", type=float, default=0.0)
    p.add_argument("--rate-429", type=float, default=0.0)
    p.add_argument("--retry-after-s", type=float, default=1.0)
    p.add_argument("--rate-timeout", type=float, default=0.0)
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--rate-malformed-judge", type=float, default=0.0)
    p.add_argument("--rate-empty", type=float, default=0.0)
    p.add_argument("--rate-malformed-body", type=float, default=0.0)
    p.add_argument("--huge-body-mb", type=float, default=50.0)
    p.add_argument("--position-bias", type=float, default=0.0)
    p.add_argument("--batch-delay-s", type=float, default=0.0)
    p.add_argument("--batch-fail-rate", type=float, default=0.0)
    p.add_argument("--batch-expire", type=float, default=0.0)
    p.add_argument("--batch-reject", type=float, default=0.0)
    p.add_argument("--batch-download-delay-s", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--require-key-env", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    values = {
        f: getattr(args, f)
        for f in _PROFILE_FIELDS
        if f != "require_key_env" and getattr(args, f) is not None
    }
    values["require_key_env"] = args.require_key_env
    try:
        profile = apply_control(Profile(), values)
    except ControlError as exc:
        raise SystemExit(f"fake_openai: {exc}") from exc
    run: Any = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional, it only buys throughput
        pass
    run(_serve(args.host, args.port, profile, args.seed))


async def _serve(host: str, port: int, profile: Profile, seed: int | None) -> None:
    app = build_app(profile, seed)
    # access_log=None: per-request logging costs more CPU than the request itself at 1,000 rps.
    # A short shutdown_timeout: requests hanging in a simulated timeout must not delay SIGTERM.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    print(f"fake_openai listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        app["fake"].reset()
        await runner.cleanup()


if __name__ == "__main__":
    main()
