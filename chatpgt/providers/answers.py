"""Reading what an OpenAI-compatible server answered: a chat completion, an error, a wait.

Pure functions over bytes and headers, no I/O but :func:`read_capped`: :func:`parse_completion`
turns a 200 body into a completion or a :class:`MalformedBody` whose ``kind`` decides whether the
request is retried; :func:`describe_failure` and :func:`server_words` turn an error answer into a
storable message (redacted, never our key); :func:`parse_retry_after` reads how long the server
asked us to wait.
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from chatpgt.redact import redact, redact_known

if TYPE_CHECKING:
    from chatpgt.settings import ProviderConfig

ERROR_DETAIL_CHARS = 300
# An error answer (4xx/5xx) is only read for its message: this much of it is plenty.
ERROR_BODY_BYTES = 64 * 1024
# How often a 200 whose text is undecodable (not UTF-8, NUL characters) is retried: once, not
# max_retries times; see parse_completion.
ENCODING_RETRIES = 1


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


# A parsed chat completion: the whole document, choices[0], and the content ("" when null).
Completion = tuple[dict[str, Any], dict[str, Any], str]


class MalformedBody(Exception):
    """A 200 body that is not a usable chat completion; ``kind`` decides whether to retry."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


async def read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
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


def parse_completion(raw: bytes) -> Completion:
    """Read a 200 body as a chat completion, or raise MalformedBody with a short reason.

    Every such answer has usually been billed, so retrying is not free. The kinds, and why:

    - ``truncated``: empty, or the JSON document ends early. A connection or proxy cut it; that
      is transient like a transport error, so it is retried within ``max_retries``.
    - ``encoding``: not UTF-8 (a Latin-1 body declared UTF-8, stray bytes, lone surrogates) or
      NUL characters in the content (Postgres text cannot hold them). Usually a server's
      encoding bug, which a retry only repeats; sometimes a sampled token that split a character.
      So it is retried once (``ENCODING_RETRIES``), not ``max_retries`` times: a broken server
      costs one extra request per item, not six.
    - ``shape``: not JSON at all (an HTML page: a wrong base_url or a proxy's page), or JSON that
      is not a chat completion (no ``choices``, no ``message``, content not a string). The server
      speaks another protocol and will answer the same again: fails at once.

    A body over ``max_response_bytes`` is refused before this (not retried either: ``max_tokens``
    bounds a real answer, so an oversized one is a broken server, and reading it again costs as
    much as reading it once).
    """
    data = _json_object(raw)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        what = "no 'choices'" if choices is None else "'choices' is not a non-empty list"
        raise MalformedBody("shape", f"not a chat completion: {what}")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise MalformedBody("shape", "not a chat completion: choices[0] has no 'message'")
    content = message.get("content")
    if content is None:
        content = ""  # a null content (e.g. a refusal or tool call): the caller judges ""
    if not isinstance(content, str):
        raise MalformedBody(
            "shape", f"message.content is a JSON {_json_type(content)}, not a string"
        )
    if "\x00" in content:
        raise MalformedBody("encoding", "message.content contains NUL characters")
    assert isinstance(choice, dict)
    return data, choice, redact_known(content)


def _json_object(raw: bytes) -> dict[str, Any]:
    """A 200 body as a JSON object, or MalformedBody (see :func:`parse_completion`)."""
    if not raw.strip():
        raise MalformedBody("truncated", "empty body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            "encoding",
            f"body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
        ) from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        stripped = text.strip()
        if exc.pos >= len(stripped) and stripped[:1] in ("{", "["):
            raise MalformedBody(
                "truncated", f"body is not valid JSON (truncated at byte {len(raw)})"
            ) from None
        kind = "encoding" if "surrogate" in exc.msg else "shape"
        detail = f"{exc.msg} at char {exc.pos}"
        if stripped[:1] not in ("{", "["):
            detail = f"starts with {stripped[:20]!r}"
        raise MalformedBody(kind, f"body is not valid JSON ({detail})"[:200]) from None
    if not isinstance(data, dict):
        raise MalformedBody("shape", f"body is a JSON {type(data).__name__}, not an object")
    return data


# Anthropic's stop reasons in the words the rest of ChatPGT (and OpenAI) uses.
ANTHROPIC_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
    "pause_turn": "pause_turn",
}


def parse_anthropic_message(raw: bytes) -> Completion:
    """Read a 200 body of Anthropic's Messages API as a completion in OpenAI's shape (the
    caller reads ``usage.prompt_tokens``/``completion_tokens`` and ``choice.finish_reason``),
    or raise MalformedBody with the same kinds as :func:`parse_completion`.

    The text is the ``text`` blocks of ``content`` joined; ``usage.input_tokens`` (plus any
    cache reads and writes) and ``output_tokens`` become the prompt and completion tokens;
    ``stop_reason`` is translated (``end_turn`` -> ``stop``, ``max_tokens`` -> ``length``, ...).
    """
    data = _json_object(raw)
    content = data.get("content")
    if data.get("type") != "message" or not isinstance(content, list):
        what = "no 'content' list" if not isinstance(content, list) else "'type' is not message"
        raise MalformedBody("shape", f"not an Anthropic message: {what}")
    parts = []
    for block in content:
        if not isinstance(block, dict):
            raise MalformedBody(
                "shape", "not an Anthropic message: a content block is not an object"
            )
        if block.get("type") == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise MalformedBody(
                    "shape", f"a text block's text is a JSON {_json_type(text)}, not a string"
                )
            parts.append(text)
    text = "".join(parts)
    if "\x00" in text:
        raise MalformedBody("encoding", "the message's text contains NUL characters")
    usage = data.get("usage")
    converted: dict[str, Any] = {}
    if isinstance(usage, dict):
        tokens_in = [usage.get(k) for k in _ANTHROPIC_INPUT_USAGE]
        if isinstance(tokens_in[0], int):
            converted["prompt_tokens"] = sum(t for t in tokens_in if isinstance(t, int))
        if isinstance(usage.get("output_tokens"), int):
            converted["completion_tokens"] = usage["output_tokens"]
    stop = data.get("stop_reason")
    choice = {
        "finish_reason": ANTHROPIC_STOP_REASONS.get(stop, stop) if isinstance(stop, str) else None
    }
    return {**data, "usage": converted}, choice, redact_known(text)


# Anthropic bills cache writes and reads as input tokens too (at other rates; we count them at
# the input price, an upper bound for reads).
_ANTHROPIC_INPUT_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else type(value).__name__


def describe_transport_error(exc: BaseException, cfg: ProviderConfig) -> str:
    # httpx_aiohttp maps some aiohttp errors to the wrong httpx class (a refused connection
    # becomes ConnectTimeout), so judge by the aiohttp exception it chains when there is one.
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ else exc
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        return f"timeout ({cfg.timeout_s:g} s)"
    return f"transport error ({type(cause).__name__})"


def describe_failure(
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
    detail = server_words(raw)
    return f"HTTP {status} from {cfg.name!r}" + (f": {detail}" if detail else "")


def server_words(raw: bytes) -> str:
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
    return " ".join(redact(detail).split())[:ERROR_DETAIL_CHARS]
