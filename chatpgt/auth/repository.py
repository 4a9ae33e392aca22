"""All SQL on ``api_keys``. Functions ``flush()``; the caller commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.auth.models import ApiKey


async def add(
    session: AsyncSession, *, name: str, scope: str, prefix: str, key_hash: str
) -> ApiKey:
    row = ApiKey(name=name, scope=scope, prefix=prefix, key_hash=key_hash)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    return (
        await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))
    ).scalar_one_or_none()


async def by_id(session: AsyncSession, key_id: int) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def all_keys(session: AsyncSession) -> Sequence[ApiKey]:
    return (await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars().all()


async def revoke(session: AsyncSession, key: ApiKey, at: datetime) -> None:
    """Set ``revoked_at`` unless it is set already (the first revocation's time is kept)."""
    await session.execute(
        update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None)).values(revoked_at=at)
    )
    await session.flush()
    await session.refresh(key)


async def touch(session: AsyncSession, key_id: int, at: datetime, stale_before: datetime) -> None:
    """Record a use at ``at``, only when the last recorded use is older than ``stale_before``
    (so concurrent API processes write it about once per interval, not once each)."""
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < stale_before),
        )
        .values(last_used_at=at)
    )
    await session.flush()
