"""Request-scoped dependencies: a database session and the task queue.

All are ``async``: FastAPI runs a plain ``def`` dependency on a worker thread, a thread hand-off
per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Protocol

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.paths import DataRoots
from chatpgt.settings import Settings


class Enqueuer(Protocol):
    def __call__(self, task_name: str, *args: object) -> Awaitable[None]: ...


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request. Routes that write call ``commit()`` themselves, before answering."""
    async with request.app.state.sessionmaker() as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for a route that reads with one statement (chatpgt.db.session
    .make_read_sessionmaker): no transaction round trips. Its connection goes back to the pool
    as the route returns, before the answer is sent."""
    async with request.app.state.read_sessionmaker() as session:
        yield session


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_data_roots(request: Request) -> DataRoots:
    return request.app.state.data_roots


async def get_enqueuer(request: Request) -> Enqueuer:
    return request.app.state.enqueuer


Session = Annotated[AsyncSession, Depends(get_session)]
ReadSession = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]
Queue = Annotated[Enqueuer, Depends(get_enqueuer)]
Roots = Annotated[DataRoots, Depends(get_data_roots)]
