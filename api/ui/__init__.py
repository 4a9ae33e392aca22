"""The review page (``/ui``): server-rendered Jinja2 templates, htmx and a little plain JS, all
served by the API itself (no CDN, no build step). See docs/review.md."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.ui.session import Signer
from chatpgt.settings import Settings

HERE = Path(__file__).parent


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the static assets and the page routes, and make the session signer."""
    from api.ui import playground, routes

    secret = settings.ui_session_secret
    app.state.ui_signer = Signer(
        secret.get_secret_value() if secret else secrets.token_urlsafe(32),
        settings.ui_session_max_age_s,
    )
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(routes.router)
    app.include_router(playground.router)
    app.include_router(playground.models_router)
