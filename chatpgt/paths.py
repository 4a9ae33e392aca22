"""Which server-side paths a request may name.

Topic imports, training corpora, local datasets and local models are files the API (and later a
worker) opens on the request's behalf. A client that can reach the API should not be able to make
it read ``/proc/self/environ`` (the provider keys) or anything else outside the directories the
operator meant to share. :class:`DataRoots` is that rule: each path is resolved (``~`` expanded,
``..`` and symlinks followed) and must lie inside one of the roots.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chatpgt.errors import ChatPGTError
from chatpgt.settings import Settings

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def looks_like_hub_id(ref: str) -> bool:
    """``owner/name`` that is not an existing local path: resolved on the Hugging Face Hub."""
    return bool(_HUB_ID.match(ref)) and not Path(ref).expanduser().exists()


class PathNotAllowed(ChatPGTError):
    status_code = 403
    title = "Path not allowed"


@dataclass(frozen=True)
class DataRoots:
    """``roots=None`` allows any path the process can read (a single-user API on loopback)."""

    roots: tuple[Path, ...] | None

    @classmethod
    def unrestricted(cls) -> DataRoots:
        return cls(None)

    @classmethod
    def of(cls, roots: Iterable[Path | str]) -> DataRoots:
        return cls(tuple(Path(r).expanduser().resolve() for r in roots))

    @classmethod
    def for_service(cls, settings: Settings, *, open_to_loopback: bool) -> DataRoots:
        """``data_roots`` when set; otherwise any path for an API only this machine can use
        without a key, and only the artifacts and model cache for one that others can reach."""
        if settings.data_roots is not None:
            return cls.of(settings.data_roots)
        if open_to_loopback:
            return cls.unrestricted()
        return cls.of([settings.artifacts_dir, settings.model_cache_dir])

    def describe(self) -> str:
        if self.roots is None:
            return "any path the API process can read"
        return ", ".join(str(r) for r in self.roots) or "no directory"

    def allows(self, ref: str) -> bool:
        if self.roots is None:
            return True
        path = Path(ref).expanduser().resolve()
        return any(path.is_relative_to(root) for root in self.roots)

    def check_source(self, ref: str, *, field: str) -> None:
        """Like :meth:`check` for a reference that may also be a Hugging Face Hub id (read from
        the Hub, not from this machine's disk)."""
        if not looks_like_hub_id(ref):
            self.check(ref, field=field)

    def check(self, ref: str, *, field: str) -> None:
        """Raise :class:`PathNotAllowed` (403) unless ``ref`` lies inside a root. The answer
        says where paths may be, never whether ``ref`` exists."""
        if not self.allows(ref):
            raise PathNotAllowed(
                f"{field} {ref!r} is outside the directories this API reads from "
                f"({self.describe()}); put the file there or set CHATPGT_DATA_ROOTS.",
                field=field,
            )
