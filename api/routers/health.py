from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import Session

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(session: Session) -> dict[str, str]:
    await session.execute(text("SELECT 1"))
    return {"status": "ok"}
