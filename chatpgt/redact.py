"""Keeping secrets out of everything ChatPGT writes: stored errors, API answers and log lines.

Provider keys come only from the environment or secret files (``ProviderConfig.api_key``), and
every key resolved there is remembered here, in this process, by value. :func:`redact` replaces
those values, and anything that merely looks like a credential (``Bearer <token>``, ``sk-...``
keys, ``api_key=`` query parameters, ``x-api-key:`` headers, passwords in URLs), with
``[REDACTED]``. It is applied where a provider failure becomes a message
(:class:`chatpgt.providers.types.ProviderError`) and, through :class:`RedactingFilter`, to every
log record the API and the workers emit, tracebacks included::

    register_provider_keys(settings.provider_configs().values())
    install_log_redaction()

The patterns are deliberately narrow: a known key is always removed wherever it appears, while
look-alikes are only removed in the shapes credentials take on the wire, so that ordinary text
(an essay that mentions "sk-learn", say) passes through unchanged.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Protocol

from pydantic import SecretStr

REDACTED = "[REDACTED]"
# Shorter values are not treated as secrets: replacing them everywhere would mangle ordinary text,
# and no real provider issues keys this short.
MIN_SECRET_CHARS = 8

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer <token>, in a header, a repr of headers or a provider's echo of them.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{4,}"), r"\1" + REDACTED),
    # OpenAI-style keys (sk-..., sk-proj-...), long enough not to hit ordinary words.
    (re.compile(r"(?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-]{12,}"), REDACTED),
    # Keys passed in query strings (?key=..., &api_key=..., &access_token=...).
    (
        re.compile(r"(?i)([?&](?:api[_\-]?key|key|access[_\-]?token|token|secret)=)[^&\s#\"'<>]+"),
        r"\1" + REDACTED,
    ),
    # x-api-key / api-key headers (Anthropic, Azure), as "name: value" or "'name': 'value'".
    (
        re.compile(r"(?i)\b((?:x-)?api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{4,}"),
        r"\1" + REDACTED,
    ),
    # user:password@ in URLs (database and broker URLs in connection errors); a password that
    # is already masked (Celery prints "redis://:**@host") is left alone.
    (re.compile(r"(://[^/\s:@]*:)(?!\*+@)[^/\s@]+@"), r"\1" + REDACTED + "@"),
)

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secrets_re: re.Pattern[str] | None = None


class _HasApiKey(Protocol):
    def api_key(self) -> SecretStr | None: ...


def add_secret(value: str | SecretStr | None) -> None:
    """Remember ``value`` as a secret of this process: :func:`redact` removes it from then on.

    None, empty and very short values (under MIN_SECRET_CHARS) are ignored.
    """
    global _secrets, _secrets_re
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value:
        return
    value = value.strip()
    if len(value) < MIN_SECRET_CHARS or value in _secrets:
        return
    with _lock:
        known = _secrets | {value}
        # Longest first, so a key that contains another is removed whole.
        alternatives = "|".join(re.escape(s) for s in sorted(known, key=len, reverse=True))
        _secrets_re = re.compile(alternatives)
        _secrets = known


def register_provider_keys(configs: Iterable[_HasApiKey]) -> None:
    """Resolve every provider's key now (environment or secret file) so that it is redacted even
    in a process that never calls that provider, such as the API."""
    for config in configs:
        add_secret(config.api_key())


def known_secret_count() -> int:
    """How many secret values this process knows (for diagnostics; never the values)."""
    return len(_secrets)


def redact_known(text: str) -> str:
    """``text`` with every known secret replaced, and nothing else: for a provider's answer (an
    essay, a verdict), where credential-shaped words may be ordinary prose but the key itself
    (a proxy or a prompt injection echoing it) must not be stored, served or exported."""
    pattern = _secrets_re
    return pattern.sub(REDACTED, text) if pattern is not None and text else text


def redact(text: str) -> str:
    """``text`` with every known secret and credential-shaped token replaced by ``[REDACTED]``."""
    if not text:
        return text
    text = redact_known(text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts a record's formatted message, traceback and stack before any handler writes it.

    The message is formatted here (``msg % args``) so that a secret passed as an argument is
    caught too; the traceback is formatted once and stored, redacted, as ``exc_text``, which is
    what ``logging.Formatter`` prints. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not fit the format: logging would print them raw to stderr.
            message = f"{record.msg} (unformattable log arguments: {record.args!r})"
            record.msg, record.args = message, None
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            info = record.exc_info if isinstance(record.exc_info, tuple) else sys.exc_info()
            if info[0] is not None:
                record.exc_text = _FORMATTER.formatException(info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            # Formatters print exc_text when it is set; one that formats exc_info itself
            # (structured loggers) must not get the unredacted traceback.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
_FILTER = RedactingFilter()


def install_log_redaction() -> int:
    """Add the redacting filter to every handler of the root logger, of every logger that has
    handlers of its own (uvicorn's and Celery's do not all propagate to the root) and to
    ``logging.lastResort``.

    Idempotent; call it again after something configures logging anew. Returns how many handlers
    carry the filter.
    """
    loggers: list[logging.Logger] = [logging.getLogger()]
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            loggers.append(logger)
    handlers = {id(h): h for lg in loggers for h in lg.handlers}
    # Where records go when no logger on their way has a handler (WARNING and up, to stderr):
    # the API process under uvicorn leaves the root logger bare.
    if logging.lastResort is not None:
        handlers[id(logging.lastResort)] = logging.lastResort
    for handler in handlers.values():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(_FILTER)
    return len(handlers)
