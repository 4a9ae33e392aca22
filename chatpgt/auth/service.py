"""API keys: create, list and revoke them, and decide whether a request may proceed.

A key is ``cpgt_<prefix>_<secret>``: ``prefix`` (12 hex characters) is public and finds the row,
``secret`` is 256 random bits. Only the SHA-256 of the whole key is stored; a key that random
needs no slow hash, and the stored hash is compared in constant time.

Every API request is checked by :class:`AccessControl`. Verified keys (and refused ones) are cached
in the process for ``auth_cache_ttl_s`` seconds, keyed by the key's hash, so a busy client costs
one database query per key, per process, per TTL, never one per request. The price is that a
revocation takes effect in every API process within that TTL, not at once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatpgt.auth import repository
from chatpgt.auth.errors import InsufficientScope, Unauthenticated
from chatpgt.auth.models import ApiKey
from chatpgt.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, Scope
from chatpgt.db.base import utcnow
from chatpgt.errors import ChatPGTError, NotFound

AuthMode = Literal["auto", "required"]
KEY_TAG = "cpgt"
PREFIX_BYTES = 6  # 12 hex characters: a public id, not a secret
SECRET_BYTES = 32  # 256 bits
# last_used_at is written at most this often per key (and only when the key is looked up).
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Cached verdicts kept at most; beyond, expired ones are dropped (all of them, if none expired).
MAX_CACHED = 10_000
READ_METHODS = frozenset({"GET", "HEAD"})
CREATE_KEY_HINT = "chatpgt keys create --name NAME --scope read|write"
T = TypeVar("T")


# --- keys ---------------------------------------------------------------------------------------


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256 of the whole key, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh ``(prefix, key)``."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    return prefix, f"{KEY_TAG}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_prefix(key: str) -> str | None:
    """The public prefix of a well-formed key; None for anything else."""
    tag, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if tag != KEY_TAG or len(prefix) != 2 * PREFIX_BYTES or not secret:
        return None
    try:
        bytes.fromhex(prefix)
    except ValueError:
        return None
    return prefix


async def create_key(session: AsyncSession, request: ApiKeyCreate) -> ApiKeyCreated:
    """Store a new key (its hash) and return it with the secret, which is not kept anywhere."""
    prefix, key = new_key()
    row = await repository.add(
        session, name=request.name, scope=request.scope, prefix=prefix, key_hash=hash_key(key)
    )
    return ApiKeyCreated.model_validate({**ApiKeyOut.model_validate(row).model_dump(), "key": key})


async def list_keys(session: AsyncSession) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(row) for row in await repository.all_keys(session)]


async def revoke_key(session: AsyncSession, id_or_prefix: str) -> tuple[ApiKeyOut, bool]:
    """Revoke the key with this id or prefix (a whole key is accepted too); ``(key, revoked
    now)``: False when it was revoked already. Raises NotFound when there is no such key."""
    wanted = id_or_prefix.strip()
    row = None
    if wanted.isdecimal() and len(wanted) < 19:
        row = await repository.by_id(session, int(wanted))
    if row is None:
        row = await repository.by_prefix(session, key_prefix(wanted) or wanted)
    if row is None:
        raise NotFound(f"no API key with id or prefix {wanted!r}")
    was_revoked = row.revoked_at is not None
    if not was_revoked:
        await repository.revoke(session, row, utcnow())
    return ApiKeyOut.model_validate(row), not was_revoked


# --- who may call -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # asked on every request, for the peer and api_host
def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an IP address, or ``localhost``) is this machine's loopback."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def scope_allows(scope: Scope, method: str) -> bool:
    """``read`` keys may call GET and HEAD routes; ``write`` keys every route."""
    return scope == "write" or method.upper() in READ_METHODS


@dataclass(frozen=True)
class Principal:
    """The key a request was made with."""

    key_id: int
    name: str
    scope: Scope


@dataclass(frozen=True)
class AccessPolicy:
    """Who needs a key. ``required``: every client. ``auto``: every client, except that when the
    API is configured to listen on a loopback address, clients connecting from loopback may come
    without one. The peer is checked too, so an API bound to 0.0.0.0 by hand (with the default
    ``api_host``) still asks every remote client for a key."""

    mode: AuthMode
    api_host: str

    @property
    def open_to_loopback(self) -> bool:
        return self.mode == "auto" and is_loopback(self.api_host)

    def key_needed(self, peer: str | None) -> bool:
        return not (self.open_to_loopback and is_loopback(peer))

    def startup_message(self) -> str:
        if self.open_to_loopback:
            return (
                f"auth=auto on {self.api_host}: clients on this machine (loopback) may call the "
                "API without a key; every other client needs one (Authorization: Bearer <key>). "
                "Set CHATPGT_AUTH=required to require keys from every client."
            )
        why = "CHATPGT_AUTH=required" if self.mode == "required" else f"api_host={self.api_host}"
        return (
            f"API keys are required on every route but the health check ({why}); "
            f"create one with: {CREATE_KEY_HINT}"
        )


def _principal(row: ApiKey) -> Principal:
    scope: Scope = "write" if row.scope == "write" else "read"
    return Principal(key_id=row.id, name=row.name, scope=scope)


@dataclass
class _Verdict:
    principal: Principal | None  # None: the key is unknown, wrong or revoked
    expires_at: float


class KeyVerifier:
    """Checks presented keys against the database, caching each verdict for ``ttl_s`` seconds.

    Concurrent requests with the same uncached key share one lookup."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, _Verdict] = {}
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        self.lookups = 0  # database lookups made (benchmarks and tests read it)

    async def verify(self, key: str) -> Principal | None:
        """The key's principal, or None when the key is malformed, unknown, wrong or revoked."""
        digest = hash_key(key)
        verdict = self._cache.get(digest)
        if verdict is not None and verdict.expires_at > self._clock():
            return verdict.principal
        pending = self._inflight.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key, digest))
            self._inflight[digest] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(digest, None))
        # shield: a client that hangs up does not cancel the lookup others are waiting on
        return await asyncio.shield(pending)

    async def verify_id(self, key_id: int) -> Principal | None:
        """The principal of the key with this id (a signed-in review session's key), or None
        when it is revoked or gone; cached like :meth:`verify`."""
        cache_key = f"id:{key_id}"
        verdict = self._cache.get(cache_key)
        if verdict is not None and verdict.expires_at > self._clock():
            return verdict.principal
        self.lookups += 1
        async with self._sessionmaker() as session:
            row = await repository.by_id(session, key_id)
            principal = None if row is None or row.revoked_at is not None else _principal(row)
        self._remember(cache_key, principal)
        return principal

    async def _load(self, key: str, digest: str) -> Principal | None:
        principal = None
        prefix = key_prefix(key)
        if prefix is not None:
            self.lookups += 1
            async with self._sessionmaker() as session:
                principal = await self._lookup(session, prefix, digest)
                await session.commit()
        self._remember(digest, principal)
        return principal

    @staticmethod
    async def _lookup(session: AsyncSession, prefix: str, digest: str) -> Principal | None:
        row = await repository.by_prefix(session, prefix)
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        if row.revoked_at is not None:
            return None
        now = utcnow()
        if row.last_used_at is None or row.last_used_at < now - LAST_USED_RESOLUTION:
            await repository.touch(session, row.id, now, now - LAST_USED_RESOLUTION)
        return _principal(row)

    def _remember(self, digest: str, principal: Principal | None) -> None:
        if self._ttl_s <= 0:
            return
        now = self._clock()
        if len(self._cache) >= MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v.expires_at > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[digest] = _Verdict(principal, now + self._ttl_s)


class AccessControl:
    """The check every API request (but the health check) goes through."""

    def __init__(self, policy: AccessPolicy, verifier: KeyVerifier) -> None:
        self.policy = policy
        self.verifier = verifier

    async def check(self, *, key: str | None, method: str, peer: str | None) -> Principal | None:
        """The request's principal; None for a keyless request the policy lets through.

        A key that is sent is always checked, even where none is needed. Raises Unauthenticated
        (401) or InsufficientScope (403)."""
        if key is None:
            if self.policy.key_needed(peer):
                raise Unauthenticated(
                    "An API key is required: send Authorization: Bearer <key> "
                    f"(an operator creates one with `{CREATE_KEY_HINT}`)."
                )
            return None
        principal = await self.verifier.verify(key)
        if principal is None:
            raise Unauthenticated("The API key is invalid or revoked.", invalid_token=True)
        if not scope_allows(principal.scope, method):
            raise InsufficientScope(
                f"The API key {principal.name!r} is read-only; {method.upper()} needs a write key.",
                required="write",
            )
        return principal


# --- keys on a database named by URL (the operator's `chatpgt keys`; no API process needed) -----


class KeyDatabaseUnavailable(ChatPGTError):
    """The keys' database cannot be used (unreachable, or not migrated)."""

    status_code = 503
    title = "Database unavailable"


class KeyAdmin:
    """Create, list and revoke the keys of the database at ``database_url``, each call one
    transaction on an engine of its own. An embedded SQLite database is migrated first, as the
    API does at start-up. Raises NotFound (revoke) and KeyDatabaseUnavailable."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def create(self, request: ApiKeyCreate) -> ApiKeyCreated:
        return self._run(lambda session: create_key(session, request))

    def all_keys(self) -> list[ApiKeyOut]:
        return self._run(list_keys)

    def revoke(self, id_or_prefix: str) -> tuple[ApiKeyOut, bool]:
        return self._run(lambda session: revoke_key(session, id_or_prefix))

    def _run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import DBAPIError

        from chatpgt.db.session import make_engine, make_sessionmaker

        url = self.database_url

        async def run() -> T:
            engine = make_engine(url, pool_size=1)
            try:
                async with make_sessionmaker(engine)() as session:
                    result = await work(session)
                    await session.commit()
                    return result
            finally:
                await engine.dispose()

        try:
            if url.startswith("sqlite"):
                from chatpgt.db.migrate import upgrade

                upgrade(url)
            return asyncio.run(run())
        except DBAPIError as exc:
            shown = make_url(url).render_as_string(hide_password=True)
            reason = " ".join(str(exc.orig if exc.orig is not None else exc).split())
            raise KeyDatabaseUnavailable(
                f"database {shown}: {reason} (is it migrated? `chatpgt migrate`)"
            ) from exc
