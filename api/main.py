"""The FastAPI application. Routers are thin: parse, call one chatpgt service, shape the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from api import inputs, problems
from api.routers import datagen, health, pairs, providers, topics, train
from chatpgt.db.session import make_engine, make_sessionmaker
from chatpgt.settings import Settings, get_settings


def _celery_enqueuer():  # type: ignore[no-untyped-def]
    from workers.app import celery_app

    def enqueue(task_name: str, *args: object) -> None:
        celery_app.send_task(task_name, args=list(args))

    return enqueue


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.database_url.startswith("sqlite"):
            # Embedded mode has no separate migration step: bring the file to head here.
            from chatpgt.db.migrate import upgrade

            await run_in_threadpool(upgrade, settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
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
        dependencies=[Depends(inputs.reject_nul)],
    )
    problems.install(app)
    for module in (health, providers, topics, datagen, pairs, train):
        app.include_router(module.router)
    return app


app = create_app()
