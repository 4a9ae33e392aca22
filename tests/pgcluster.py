"""A throw-away Postgres cluster for tests that stop and start the database server.

The shared server on 127.0.0.1:5432 is never restarted (other tests use it). This one lives in a
temporary directory, listens on its own port on 127.0.0.1 with trust auth for ``postgres``, and is
removed at the end. ``initdb`` and ``postgres`` refuse to run as root, so when the tests run as
root (as in CI) the server's commands run as the ``postgres`` system user, who owns the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests import procs


def find_bindir() -> Path | None:
    """The directory of the newest installed ``initdb``/``pg_ctl``/``postgres``, or None."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for bindir in candidates:
        if all((Path(bindir) / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(bindir)
    return None


def _server_user() -> dict[str, Any]:
    """subprocess arguments that run the server's commands as a non-root user."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError(
            "running as root and there is no 'postgres' system user: initdb refuses root"
        ) from exc
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class PgCluster:
    """One Postgres server in a temporary directory (``start``/``stop`` it as often as needed)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = procs.free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chatpgt-pgcluster-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self._as = _server_user()
        if self._as:
            os.chown(self.root, self._as["user"], self._as["group"])

    def _run(self, *argv: str, timeout: float = 120.0) -> None:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        done = subprocess.run(
            argv,
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **self._as,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}\n"
                f"{self.server_log()[-3000:]}"
            )

    def server_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        # fsync off: a killed server (stop -m immediate) still recovers from the OS page cache.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c shared_buffers=32MB -c max_connections=100"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "120",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clean shutdown (sessions are terminated); ``immediate``: like a crash, the
        next start runs crash recovery."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def admin_url(self, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` and return its asyncpg URL."""
        admin = create_engine(self.admin_url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def remove(self) -> None:
        """Stop the server (if it runs) and delete its directory."""
        try:
            if self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
