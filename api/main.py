"""The FastAPI application. Routers are thin: parse, call one chatpgt service, shape the answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from api import auth, inputs, openapi, page_lane, problems, ui
from api.limits import BodySizeLimit
from api.routers import (
    datagen,
    datasets,
    eval,
    health,
    labels,
    metrics,
    pairs,
    providers,
    serving,
    topics,
    train,
)
from chatpgt.auth.service import AccessControl, AccessPolicy, KeyVerifier
from chatpgt.db.session import make_engine, make_read_sessionmaker, make_sessionmaker
from chatpgt.metrics import configure as configure_metrics
from chatpgt.paths import DataRoots
from chatpgt.redact import install_log_redaction, known_secret_count, register_provider_keys
from chatpgt.settings import Settings, get_settings


def _celery_enqueuer():  # type: ignore[no-untyped-def]
    from workers.app import celery_app

    def enqueue(task_name: str, *args: object) -> None:
        celery_app.send_task(task_name, args=list(args))

    return enqueue


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_metrics(settings.metrics_dir)  # before any sample (chatpgt.metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Uvicorn has configured logging by now: from here on no log line carries a provider
        # key, even one this process never uses itself (chatpgt.redact).
        register_provider_keys(settings.provider_configs().values())
        logging.getLogger("uvicorn.error").info(
            "secrets: %d provider key(s) redacted from logs and errors; filter on %d log "
            "handler(s)",
            known_secret_count(),
            install_log_redaction(),
        )
        if settings.database_url.startswith("sqlite"):
            # Embedded mode has no separate migration step: bring the file to head here.
            from chatpgt.db.migrate import upgrade

            await run_in_threadpool(upgrade, settings.database_url)
        # A fixed pool (no overflow connections opened and closed under load) and no ping per
        # checkout: a connection a database restart closed is replaced when checked out.
        engine = make_engine(
            settings.database_url,
            pool_size=settings.api_db_pool_size,
            max_overflow=0,
            pre_ping=False,
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.read_sessionmaker = make_read_sessionmaker(engine)
        policy = AccessPolicy(mode=settings.auth, api_host=settings.api_host)
        app.state.access = AccessControl(
            policy, KeyVerifier(app.state.sessionmaker, ttl_s=settings.auth_cache_ttl_s)
        )
        # uvicorn's logger: the one line every deployment shows at start-up, whatever its config.
        startup_log = logging.getLogger("uvicorn.error")
        if policy.open_to_loopback:
            startup_log.warning(policy.startup_message())
        else:
            startup_log.info(policy.startup_message())
        app.state.data_roots = DataRoots.for_service(
            settings, open_to_loopback=policy.open_to_loopback
        )
        startup_log.info("request paths may name: %s", app.state.data_roots.describe())
        send = _celery_enqueuer()

        async def enqueue(task_name: str, *args: object) -> None:
            await run_in_threadpool(send, task_name, *args)

        app.state.enqueuer = enqueue
        worker = None
        if settings.runs_embedded_worker:
            from workers.app import celery_app
            from workers.embedded import EmbeddedWorker

            worker = EmbeddedWorker(celery_app)
            await run_in_threadpool(worker.start)
        try:
            yield
        finally:
            if worker is not None:
                await run_in_threadpool(worker.stop)
            await engine.dispose()

    app = FastAPI(
        title="ChatPGT",
        version="0.1.0",
        description="Topics → candidate essays → blinded judge → preference pairs → SFT/DPO.",
        lifespan=lifespan,
        # Keys are checked by a middleware (auth.install) before any of this; `bearer` only
        # declares the scheme in the OpenAPI schema.
        dependencies=[
            Depends(auth.bearer),
            Depends(inputs.known_query_params),
            Depends(inputs.storable_params),
        ],
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    problems.install(app, lambda schema: openapi.state_deployment_limits(schema, settings))
    page_lane.install(app, settings.api_page_lane)  # inside the key check
    auth.install(app)
    # datasets before pairs: GET /pairs/dedup is not GET /pairs/{pair_id}
    routers = (
        health,
        providers,
        topics,
        datagen,
        datasets,
        pairs,
        labels,
        train,
        serving,
        eval,
        metrics,
    )
    for module in routers:
        app.include_router(module.router)
    ui.install(app, settings)
    return app


app = create_app()
