"""Request-scoped dependencies: a database session and the task queue."""

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


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_data_roots(request: Request) -> DataRoots:
    return request.app.state.data_roots


def get_enqueuer(request: Request) -> Enqueuer:
    return request.app.state.enqueuer


Session = Annotated[AsyncSession, Depends(get_session)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Queue = Annotated[Enqueuer, Depends(get_enqueuer)]
Roots = Annotated[DataRoots, Depends(get_data_roots)]
