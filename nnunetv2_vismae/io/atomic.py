"""Atomic writes: a reader (or a run killed mid-write) never sees half a file.

Everything goes to a temporary file in the destination folder, which is then renamed over the
destination (``os.replace`` is atomic on POSIX and Windows within one file system).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False):
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    Keeps the destination's suffix (``x.png`` -> ``.x.png.<random>.png``) so writers that pick a
    format by extension still work. ``fsync`` flushes to disk before the rename (for weights).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_json_atomic(path: str | os.PathLike, content, indent: int | None = 4) -> None:
    write_bytes_atomic(path, json.dumps(content, indent=indent).encode())
