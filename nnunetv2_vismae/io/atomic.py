"""Atomic writes: a reader (or a run killed mid-write) never sees half a file.

Everything goes to a temporary file ``.NAME.vismae-tmp-<8 hex digits>SUFFIX`` in the destination
folder, which is then renamed over the destination (``os.replace`` is atomic on POSIX and Windows
within one file system). NAME is shortened where the temporary's name would exceed NAME_MAX. The
renamed file has the mode of any new file (0666 less the umask: 0644 under umask 022), whatever mode
the writer gave it. A write that fails for want of space, permission or a writable file system raises
``WriteError``, one sentence naming the destination; the old file is kept and the temporary
removed. Only a process killed mid-write (kill -9) leaves its temporary behind:
``remove_leftovers`` deletes those, recognised by the marker and the exact random part, so that no
name a user gave a file is taken for one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from nnunetv2_vismae.errors import UserError

_MARKER = "vismae-tmp-"
# .NAME.vismae-tmp-<8 hex digits>SUFFIX, NAME possibly shortened (even to nothing), SUFFIX NAME's own or .tmp
_TEMPORARY = re.compile(rf"\..*\.{_MARKER}[0-9a-f]{{8}}\.[^.]+", re.DOTALL)
NAME_MAX = 255  # bytes in a file name: Linux, macOS and Windows file systems


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


def _temporary_name(name: str, suffix: str) -> str:
    """``.NAME.vismae-tmp-<random>SUFFIX``, NAME cut to fit NAME_MAX bytes (a long SUFFIX becomes .tmp)."""
    random_part = f".{_MARKER}{secrets.token_hex(4)}"
    room = NAME_MAX - 1 - len(random_part) - len(os.fsencode(suffix))
    if room < 0:
        suffix, room = ".tmp", NAME_MAX - 1 - len(random_part) - len(".tmp")
    return f".{os.fsdecode(os.fsencode(name)[:room])}{random_part}{suffix}"


def _new_temporary(path: Path) -> Path:
    """An empty new file ``.NAME.vismae-tmp-<random>SUFFIX`` beside ``path``, with a new file's mode
    (``tempfile.mkstemp`` would make it 0600 whatever the umask)."""
    while True:
        tmp = path.parent / _temporary_name(path.name, path.suffix or ".tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False):
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    Keeps the destination's suffix (``x.png`` -> ``.x.png.vismae-tmp-<random>.png``) so writers that
    pick a format by extension still work. ``fsync`` flushes to disk before the rename (for weights).
    I/O failures raise ``WriteError``.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temporary(path)
        new_file_mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        with writing(path):
            yield str(tmp)
            if fsync:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            if stat.S_IMODE(os.stat(tmp).st_mode) != new_file_mode:  # safetensors 0.8 writes 0600
                os.chmod(tmp, new_file_mode)
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
    """Whether a file name is one of ``atomic_path``'s temporaries (``.loss.png.vismae-tmp-1a2b3c4d.png``)."""
    return _TEMPORARY.fullmatch(name) is not None


def _names_in(folder: str | os.PathLike) -> list[str]:
    """The names in ``folder``; none where it is missing (a command's subfolder not written yet)."""
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def remove_leftovers(folders: Iterable[str | os.PathLike]) -> list[str]:
    """Delete the temporaries that killed writers left in ``folders`` (not in their subfolders); their
    paths. Call it only while no other process writes there (``lock.claim_output_folder`` does)."""
    removed = []
    for folder in folders:
        for name in _names_in(folder):
            leftover = os.path.join(folder, name)
            if is_leftover(name) and not os.path.islink(leftover):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
                    removed.append(leftover)
    return removed
