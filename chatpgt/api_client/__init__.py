"""The ChatPGT HTTP API from Python: :class:`ChatPGTClient` (``client``) and the builders of its
request bodies from loose values (``requests``). The ``chatpgt`` CLI is built on both."""

from chatpgt.api_client.client import (
    DEFAULT_API_URL,
    ApiError,
    ApiUnreachable,
    ChatPGTClient,
    ClientError,
    PairSelection,
    UnexpectedAnswer,
)
from chatpgt.api_client.requests import InvalidRequest

__all__ = [
    "DEFAULT_API_URL",
    "ApiError",
    "ApiUnreachable",
    "ChatPGTClient",
    "ClientError",
    "InvalidRequest",
    "PairSelection",
    "UnexpectedAnswer",
]
