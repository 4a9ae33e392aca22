"""Engine and session factories. Owners (the API lifespan, a task run) create and dispose them."""

from __future__ import annotations

import errno
import hashlib
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

T = TypeVar("T")

# How long a SQLite connection waits for another writer (threads and processes share the file).
SQLITE_BUSY_TIMEOUT_S = 30
# RETURNING (3.35), UPDATE ... FROM (3.33) and aggregate FILTER (3.30) are used by repositories.
MIN_SQLITE_VERSION = (3, 35)
# How long opening a Postgres connection may take before it counts as "database unavailable"
# (asyncpg's own default is 60 s: a request would hang that long while the server is away).
PG_CONNECT_TIMEOUT_S = 10
# SQLSTATEs of a server that is gone, going away or not back yet: connection exceptions
# (class 08), admin/crash shutdown and "the database system is starting up" (57P01-57P03), and
# too many connections (53300, e.g. while every client reconnects at once).
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EPIPE,
}


def _md5(value: str | None) -> str | None:
    return None if value is None else hashlib.md5(value.encode()).hexdigest()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    finally:
        cursor.close()
    # Postgres' md5(), so that a seeded topic sample is one statement on both databases.
    dbapi_connection.create_function("md5", 1, _md5, deterministic=True)


def configure_sqlite(engine: Engine) -> None:
    """Give every new connection of a SQLite engine WAL mode, enforced foreign keys, a busy
    timeout and md5(). Called by :func:`make_engine` and for the training worker's sync engine.
    Raises RuntimeError when Python's SQLite library is older than ``MIN_SQLITE_VERSION``."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        wanted = ".".join(map(str, MIN_SQLITE_VERSION))
        raise RuntimeError(
            f"ChatPGT needs SQLite {wanted} or newer; this Python has {sqlite3.sqlite_version}."
        )
    event.listen(engine, "connect", _sqlite_on_connect)


def sqlite_connect_args(url: str) -> dict[str, Any]:
    """The driver arguments a SQLite URL needs (empty for any other database)."""
    return {"timeout": SQLITE_BUSY_TIMEOUT_S} if url.startswith("sqlite") else {}


def _drop_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: a connection whose socket the server closed (a restart terminates
    every session) is replaced before use. asyncpg learns of the close from the event loop as
    it happens, so asking costs no round trip, unlike ``pool_pre_ping`` (three on a connection
    outside a transaction: BEGIN, a ping, ROLLBACK)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)
    if is_closed is not None and is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    pre_ping: bool = True,
) -> AsyncEngine:
    """The async engine for ``url``: Postgres (asyncpg, pooled) or SQLite (aiosqlite, a file
    that several threads and processes may write: WAL, foreign keys on, 30 s busy timeout).

    Postgres: ``pool_size`` connections kept open, plus ``max_overflow`` (default: as many
    again) opened when all are busy and closed when returned. A connection the server closed
    is replaced on checkout; ``pre_ping`` also pings every connection checked out (a round trip
    per checkout, for connections that may die without the client noticing)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args=sqlite_connect_args(url))
        configure_sqlite(engine.sync_engine)
        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=pre_ping,
        connect_args={"timeout": PG_CONNECT_TIMEOUT_S},
    )
    event.listen(engine.sync_engine, "checkout", _drop_closed_connection)
    return engine


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached right now (down, restarting, the
    connection dropped mid-transaction), as opposed to a statement the database refused. The
    same work is worth retrying unchanged once the database is back; a transaction that failed
    this way may or may not have committed, so what is retried must be safe to replay."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        # Refused/reset connections; TimeoutError is the connect timeout.
        if isinstance(current, ConnectionError | TimeoutError | socket.gaierror):
            return True
        if isinstance(current, OSError) and (
            current.errno in _UNREACHABLE_ERRNOS
            # asyncio's "Multiple exceptions: [Errno 111] Connect call failed ..." (a host name
            # with several addresses) carries no errno.
            or (current.errno is None and "Connect call failed" in str(current))
        ):
            return True
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and code.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads of one statement each (a page, one row), on ``engine``'s pool: on
    Postgres in autocommit, so a read is one round trip, with no BEGIN before it and no
    ROLLBACK when the connection goes back. Not for several reads that must agree with each
    other (each statement sees its own snapshot), nor for server-side cursors or writes."""
    if engine.dialect.name != "postgresql":
        return make_sessionmaker(engine)
    return make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits on success, rolls back on error."""
    async with factory() as session, session.begin():
        yield session


async def run_once(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``work`` in one transaction on an engine of its own (one connection), disposed after:
    for a worker's short reads outside any run (recovery at start, the orphan sweep)."""
    engine = make_engine(url, pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()
