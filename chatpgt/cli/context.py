"""What the global options set, and the API client the commands share."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from chatpgt.api_client import ChatPGTClient


@dataclass
class CliState:
    """``--api``/``--api-key``; the API client is made on first use and closed at exit."""

    api_url: str
    api_key: str | None = field(default=None, repr=False)
    _client: ChatPGTClient | None = field(default=None, repr=False)

    def client(self, ctx: typer.Context) -> ChatPGTClient:
        if self._client is None:
            self._client = ChatPGTClient(self.api_url, api_key=self.api_key)
            ctx.call_on_close(self._client.close)
        return self._client


def api(ctx: typer.Context) -> ChatPGTClient:
    """The API client of this invocation (``--api``, ``--api-key``)."""
    state = ctx.find_root().obj
    assert isinstance(state, CliState)
    return state.client(ctx)
