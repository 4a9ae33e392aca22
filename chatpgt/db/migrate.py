"""Running the Alembic migrations from code (the CLI, the demo, embedded start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

_CHECKOUT = Path(__file__).resolve().parent.parent.parent


class MigrationsNotFound(RuntimeError):
    """No alembic.ini and migrations/ in the working directory or the installed checkout."""


def migrations_root() -> Path:
    """The directory holding alembic.ini and migrations/: the working directory, else the
    checkout this package was installed from."""
    for root in (Path.cwd(), _CHECKOUT):
        if (root / "alembic.ini").is_file() and (root / "migrations" / "env.py").is_file():
            return root
    raise MigrationsNotFound(
        "cannot find alembic.ini and migrations/; run from the repository root"
    )


def alembic_config(database_url: str) -> Config:
    root = migrations_root()
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(database_url: str, revision: str = "head") -> str:
    """Upgrade ``database_url`` to ``revision``; returns the revision it is at afterwards.

    For a SQLite file, its folder is created first.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(database_url)
    command.upgrade(cfg, revision)
    if revision == "head":
        return ScriptDirectory.from_config(cfg).get_current_head() or revision
    return revision
