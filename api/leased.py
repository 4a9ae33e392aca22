"""The routes every leased resource (training run, evaluation run, rounds run) has alike: read
one, cancel one, and the tail of a submit (commit, enqueue, answer as read back)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from api import problems
from api.deps import Enqueuer, Session
from api.pagination import IdPath

Read = Callable[[AsyncSession, int], Awaitable[Any]]


async def queued(
    session: AsyncSession, enqueue: Enqueuer, task: str, row_id: int, get: Read
) -> Any:
    """A submit's end: commit the queued row, enqueue its id after the commit, answer with it."""
    await session.commit()
    await enqueue(task, row_id)
    return await get(session, row_id)


def accepted(response_model: type[Any], *codes: int) -> dict[str, Any]:
    """The arguments of a route that queues work: 202, the row as answered, its problems."""
    return {
        "status_code": 202,
        "response_model": response_model,
        "responses": problems.responses(*codes),
    }


def add_get_and_cancel(
    router: APIRouter,
    path: str,
    noun: str,
    response_model: type[Any],
    get: Read,
    cancel: Read,
    *,
    get_doc: str | None = None,
    cancel_doc: str | None = None,
) -> None:
    """``GET {path}/{run_id}`` (404 when missing) and ``POST {path}/{run_id}/cancel`` (202; 404,
    409 once finished), named ``get_{noun}`` and ``cancel_{noun}`` (their OpenAPI operation
    ids and summaries)."""

    async def get_one(run_id: IdPath, session: Session) -> Any:
        return await get(session, run_id)

    async def cancel_one(run_id: IdPath, session: Session) -> Any:
        out = await cancel(session, run_id)
        await session.commit()
        return out

    get_one.__doc__, cancel_one.__doc__ = get_doc, cancel_doc
    router.add_api_route(
        f"{path}/{{run_id}}",
        get_one,
        methods=["GET"],
        name=f"get_{noun}",
        response_model=response_model,
        responses=problems.responses(404),
    )
    router.add_api_route(
        f"{path}/{{run_id}}/cancel",
        cancel_one,
        methods=["POST"],
        name=f"cancel_{noun}",
        **accepted(response_model, 404, 409),
    )
