"""The ``chatpgt`` command (console script ``chatpgt = "chatpgt.cli:app"``; ``python -m
chatpgt.cli`` is the same).

Processes: ``serve`` (uvicorn), ``worker`` (Celery), ``migrate`` (Alembic), started by module name
(``chatpgt.launch``). ``keys`` manages API keys through the auth service on the database (an
operator command). Everything else talks to the API at ``--api`` (``CHATPGT_API_URL``), with the
key ``--api-key`` (``CHATPGT_API_KEY``) when one is given, through ``chatpgt.api_client``:
``topics``, ``datagen``, ``pairs``, ``train``, ``models``. Long work is followed with a live
progress display on stderr (plain progress lines when stderr is not a terminal); results go to
stdout.

One module per command group (``processes``, ``topics``, ``datagen``, ``pairs``, ``train``,
``models``, ``keys``), the root app and its error handling in ``app``, the shared output helpers
in ``output``.

Exit codes: 0 done (a followed job or run succeeded), 1 an error, a job/run that failed or was
cancelled, or a datagen job that produced nothing, 2 a usage error, 130 detached from a job/run
with Ctrl-C. An error is one line on stderr, never a traceback (``--debug`` shows the traceback
of an unexpected one).
"""

from chatpgt.cli.app import app

__all__ = ["app"]
