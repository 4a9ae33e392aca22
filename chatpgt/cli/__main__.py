"""``python -m chatpgt.cli``: the ``chatpgt`` command."""

from chatpgt.cli.app import app

app()
