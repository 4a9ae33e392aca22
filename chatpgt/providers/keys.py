"""Whether a provider that needs an API key has one right now, and what to say when it has not.

A provider *needs* a key when its declaration names one (``api_key_env`` or ``api_key_file``);
one that names neither (a local server, kind ``local``) never does. :func:`missing_key` is what
the datagen service asks before it accepts a job (a 400 naming the provider and the variable or
file) and what :class:`chatpgt.providers.client.ProviderPool` asks before each request, so a key
that disappears while a job runs fails its items at once with the same words, with no request sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatpgt.settings import ProviderConfig


def missing_key_reason(config: ProviderConfig) -> str:
    """The message for a provider whose key is declared and not found (no check is made)."""
    where = []
    if config.api_key_env:
        where.append(f"the environment variable {config.api_key_env} is not set")
    if config.api_key_file:
        where.append(f"the secret file {config.api_key_file} (api_key_file) is missing or empty")
    return f"provider {config.name!r} has no API key: " + " and ".join(where)


def needs_key(config: ProviderConfig) -> bool:
    return config.kind != "local" and bool(config.api_key_env or config.api_key_file)


def missing_key(config: ProviderConfig) -> str | None:
    """None when ``config`` needs no key or its key is there now; else why it is missing."""
    if not needs_key(config) or config.api_key() is not None:
        return None
    return missing_key_reason(config)


def missing_keys(configs: Mapping[str, ProviderConfig], names: Iterable[str]) -> list[str]:
    """The missing-key messages of the named providers (unknown names are skipped), sorted."""
    reasons = (missing_key(configs[n]) for n in sorted(set(names)) if n in configs)
    return [r for r in reasons if r is not None]
