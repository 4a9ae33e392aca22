"""``GET /metrics``: the Prometheus exposition (chatpgt.observability.service).

Under the API's key rules like every route but the health check: a read key is enough, and an
API open to loopback clients (auth "auto" on a loopback host) serves loopback scrapers without
one (docs/deploy.md, "Metrics").
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import AppSettings
from chatpgt.observability.service import CONTENT_TYPE, scrape
from workers.app import DATAGEN_QUEUE, GPU_QUEUE

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, settings: AppSettings) -> Response:
    """Jobs, items, tokens, cost and training runs from the database, queue depths from the
    broker, and provider latency, retries and 429s from every process."""
    body = await scrape(
        request.app.state.sessionmaker,
        broker_url=settings.broker_url,
        queues=(DATAGEN_QUEUE, GPU_QUEUE),
        broker_key_prefix=settings.broker_key_prefix,
        timeout_s=settings.metrics_timeout_s,
    )
    return Response(body, media_type=CONTENT_TYPE)
