"""Topics: add titles, list them, import them from a file or a Hugging Face dataset."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from api import problems
from api.deps import AppSettings, Roots, Session
from api.pagination import PageLimit
from chatpgt.topics import service
from chatpgt.topics.schemas import (
    ImportResult,
    TopicImport,
    TopicPage,
    TopicsCreate,
    TopicsCreated,
    TopicSource,
)

router = APIRouter(prefix="/topics", tags=["topics"])


@router.post("", response_model=TopicsCreated, responses=problems.responses(400, 413))
async def create_topics(
    body: TopicsCreate, session: Session, settings: AppSettings
) -> TopicsCreated:
    """Add titles; those equal to an existing topic after normalisation are not added again.
    More than `api_max_topics_per_request` titles is a 413."""
    result = await service.create_topics(
        session, body.titles, max_titles=settings.api_max_topics_per_request
    )
    await session.commit()
    return result


@router.get("", response_model=TopicPage, responses=problems.responses(400))
async def list_topics(
    session: Session,
    limit: PageLimit,
    cursor: str | None = None,
    source: TopicSource | None = None,
    q: Annotated[str | None, Query(description="substring of the title")] = None,
) -> TopicPage:
    return await service.list_topics(session, limit=limit, cursor=cursor, source=source, q=q)


@router.post("/import", response_model=ImportResult, responses=problems.responses(400, 403))
async def import_topics(
    session: Session, roots: Roots, body: Annotated[TopicImport, Body(discriminator="source")]
) -> ImportResult:
    """Import titles (and, for a corpus, essays) in one transaction: a file that cannot be read or
    lacks the column is a 400 and writes nothing; a path outside the API's data roots
    (`CHATPGT_DATA_ROOTS`) is a 403."""
    result = await service.import_topics(session, body, roots=roots)
    await session.commit()
    return result
