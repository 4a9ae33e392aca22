"""The routes every leased resource (training run, evaluation run, rounds run) has alike: read
one, cancel one, and the tail of a submit (commit, enqueue, answer as read back)."""

from __future__ import annotations

import inspect
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
    param: str = "run_id",
    get_name: str | None = None,
    cancel_name: str | None = None,
) -> None:
    """``GET {path}/{param}`` (404 when missing) and ``POST {path}/{param}/cancel`` (202; 404,
    409 once finished), named ``get_{noun}`` and ``cancel_{noun}`` unless ``get_name`` /
    ``cancel_name`` say otherwise (their OpenAPI operation ids and summaries). ``param`` names
    the path parameter (``run_id``, ``job_id``, ``scan_id``: as the API has always called it)."""

    async def get_one(session: AsyncSession, **ids: int) -> Any:
        return await get(session, ids[param])

    async def cancel_one(session: AsyncSession, **ids: int) -> Any:
        out = await cancel(session, ids[param])
        await session.commit()
        return out

    # FastAPI reads the parameters from the signature: the id under its name, the session.
    signature = inspect.Signature(
        [
            inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=IdPath),
            inspect.Parameter("session", inspect.Parameter.KEYWORD_ONLY, annotation=Session),
        ]
    )
    for endpoint, doc in ((get_one, get_doc), (cancel_one, cancel_doc)):
        endpoint.__signature__ = signature  # type: ignore[attr-defined]
        endpoint.__doc__ = doc
    router.add_api_route(
        f"{path}/{{{param}}}",
        get_one,
        methods=["GET"],
        name=get_name or f"get_{noun}",
        response_model=response_model,
        responses=problems.responses(404),
    )
    router.add_api_route(
        f"{path}/{{{param}}}/cancel",
        cancel_one,
        methods=["POST"],
        name=cancel_name or f"cancel_{noun}",
        **accepted(response_model, 404, 409),
    )
