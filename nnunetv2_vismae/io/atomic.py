"""Atomic writes: a reader (or a run killed mid-write) never sees half a file.

Everything goes to a temporary file ``.NAME.<random>SUFFIX`` in the destination folder, which is
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows within one file
system). The temporary is created like any new file (mode 0666 less the umask: 0644 under umask
022). A write that fails for want of space, permission or a writable file system raises
``WriteError``, one sentence naming the destination; the old file is kept and the temporary
removed. Only a process killed mid-write (kill -9) leaves its temporary behind:
``remove_leftovers`` deletes those.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from pathlib import Path

from nnunetv2_vismae.errors import UserError

# .NAME.<random>SUFFIX, SUFFIX being NAME's own (or .tmp); <random> also covers tempfile's names
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]+(?P<suffix>\.[^.]+)")


class WriteError(UserError, OSError):
    """Writing a file failed (disk full, no permission, read-only file system): ``str()`` is one
    sentence naming the file, ``strerror`` says why."""

    # the advice of commands that resume: the sentence they print is ``error.sentence(error.RERUN)``
    RERUN = "what was saved before is intact: make room and rerun the same command"

    def __init__(self, path: str | os.PathLike, reason: str, error_number: int | None = None):
        super().__init__(error_number, reason, str(path))

    def sentence(self, advice: str | None = None) -> str:
        return f"Cannot write {self.filename}: {self.strerror}" + (f"; {advice}" if advice else "") + "."

    def __str__(self) -> str:
        return self.sentence()


def _write_failure(error: BaseException, folder: Path) -> str | None:
    """Why a write failed, for the I/O failures of Python's, torch's and safetensors' writers;
    None for any other error (a bug, raised as it is)."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    text = str(error)
    if type(error).__name__ == "SafetensorError" and "I/O error:" in text:
        return text.split("I/O error:", 1)[1].split("(os error")[0].strip()
    if isinstance(error, RuntimeError) and ("inline_container" in text or "StreamWriter" in text):
        # torch's zip writer names no errno; a full disk shows as no free space left
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free == 0:
                return os.strerror(errno.ENOSPC)
        return f"torch's file writer failed ({text.splitlines()[0]})"
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """Turn an I/O failure of the writes inside into ``WriteError`` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except Exception as e:
        reason = _write_failure(e, Path(path).parent)
        if reason is None:
            raise
        raise WriteError(path, reason, e.errno if isinstance(e, OSError) else None) from e


def _new_temporary(path: Path) -> Path:
    """An empty new file ``.NAME.<random>SUFFIX`` beside ``path``, with a new file's mode
    (``tempfile.mkstemp`` would make it 0600 whatever the umask)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{path.suffix or '.tmp'}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False):
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    Keeps the destination's suffix (``x.png`` -> ``.x.png.<random>.png``) so writers that pick a
    format by extension still work. ``fsync`` flushes to disk before the rename (for weights).
    I/O failures raise ``WriteError``.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temporary(path)
    try:
        with writing(path):
            yield str(tmp)
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


def is_leftover(name: str) -> bool:
    """Whether a file name is one of ``atomic_path``'s temporaries (``.loss.png.k2j4x9.png``)."""
    match = _TEMPORARY.fullmatch(name)
    return match is not None and match["suffix"] == (Path(match["name"]).suffix or ".tmp")


def remove_leftovers(folder: str | os.PathLike) -> list[str]:
    """Delete the temporaries that killed writers left in ``folder`` and its subfolders; their paths.
    Call it only while no other process writes there (``lock.claim_output_folder`` does)."""
    removed = []
    for root, _, names in os.walk(folder):
        for name in names:
            leftover = os.path.join(root, name)
            if is_leftover(name) and not os.path.islink(leftover):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
                    removed.append(leftover)
    return removed
