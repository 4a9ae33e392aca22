"""What a training recipe is given to talk to its run row: the ``Reporter`` interface.

The recipes and callbacks (and evaluation's runner) receive one; the worker's ``RunReporter``
(``chatpgt.training.execution``) is the implementation that writes to the database. Keeping the
interface here means the recipes never import the worker that imports them.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class Reporter(Protocol):
    """Reports progress, metrics and artifacts of one run and says when training must stop.

    ``cancelled`` is set once a cancel was requested; ``lost`` once the lease is no longer this
    process's (then nothing more may be written)."""

    cancelled: threading.Event
    lost: threading.Event

    def report(self, *, force: bool = False, **columns: dict[str, Any]) -> None:
        """Merge ``columns`` (progress, metrics, artifacts, data_report, ...) into the row; writes
        are throttled unless ``force``."""

    @property
    def should_stop(self) -> bool:
        """A cancel was requested or the lease was lost: stop at the next step."""


class LeasedReporter(Reporter, Protocol):
    """A :class:`Reporter` that also names the lease owner its writes go under (the launcher of
    distributed ranks hands it to every rank)."""

    owner: str
