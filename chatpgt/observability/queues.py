"""How many tasks wait in each broker queue, read through kombu (Celery's transport library).

kombu knows each transport's layout (Redis lists per priority under the deployment's key
prefix, the in-memory queues of embedded mode), so nothing here repeats it. chatpgt never
imports Celery; kombu is the transport layer under it.
"""

from __future__ import annotations

from collections.abc import Sequence

from kombu import Connection


def queue_depths(
    broker_url: str, queues: Sequence[str], *, key_prefix: str = "", timeout_s: float = 5.0
) -> dict[str, int]:
    """Messages waiting (not yet taken by a worker) in each of ``queues``. Blocking: run it in
    a thread. Raises the transport's error when the broker cannot be reached in ``timeout_s``."""
    options: dict[str, object] = {
        # One connection attempt: a scrape reports the broker down rather than wait for it.
        "max_retries": 1,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if key_prefix:
        options["global_keyprefix"] = key_prefix
    with Connection(broker_url, connect_timeout=timeout_s, transport_options=options) as conn:
        channel = conn.default_channel
        # Declaring is how kombu reports a size; for Redis and memory it creates nothing.
        return {name: int(channel.queue_declare(queue=name).message_count) for name in queues}
