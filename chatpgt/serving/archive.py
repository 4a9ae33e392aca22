"""A model folder as a tar stream, for users who reach only the API (``GET
/models/{id}/archive``): written file by file as it is sent, so memory stays flat whatever the
model's size. The folder's ``README.md`` is replaced by the card as of now.
"""

from __future__ import annotations

import re
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def archive_name(model_name: str) -> str:
    """The folder name inside the archive (and the file's stem): the model's name, made safe."""
    return _UNSAFE.sub("-", model_name).strip("-.") or "model"


def folder_files(folder: Path) -> list[Path]:
    """The folder's regular files (links and anything else left out), sorted, relative."""
    return sorted(
        p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
    )


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * ((_BLOCK - size % _BLOCK) % _BLOCK)


def stream_tar(folder: Path, top: str, replace: dict[str, bytes]) -> Iterator[bytes]:
    """The tar of ``folder`` under ``top/``, with the files named in ``replace`` (relative
    paths) given those contents (added when the folder lacks them)."""
    now = time.time()
    names = {str(p) for p in folder_files(folder)}
    for rel in sorted(names | set(replace)):
        if rel in replace:
            data = replace[rel]
            yield _header(f"{top}/{rel}", len(data), now)
            yield data
            yield _padding(len(data))
            continue
        path = folder / rel
        stat = path.stat()
        yield _header(f"{top}/{rel}", stat.st_size, stat.st_mtime)
        sent = 0
        with path.open("rb") as f:
            while sent < stat.st_size:
                chunk = f.read(min(CHUNK, stat.st_size - sent))
                if not chunk:  # the file shrank while we read it: the tar must stay whole
                    raise OSError(f"{path} changed while it was archived")
                sent += len(chunk)
                yield chunk
        yield _padding(stat.st_size)
    yield b"\0" * (2 * _BLOCK)


def read_tar(data: bytes, target: Path) -> Path:
    """Unpack an archive made by :func:`stream_tar` into ``target``; the model folder."""
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        tar.extractall(target, filter="data")
    if len(tops) != 1:
        raise ValueError(f"the archive holds {len(tops)} top folders, expected one")
    return target / tops.pop()
