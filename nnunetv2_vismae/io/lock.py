"""One writer per output folder: the lock that ``nnUNetv2_vismae_pretrain`` and
``nnUNetv2_vismae_classify train`` take on ``-o``.

``claim_output_folder(folder, command, subfolders)`` checks that the folder can be written, creates
it, takes its lock and removes the temporaries that killed writers left in it and in the subfolders
the command writes (nowhere else: the rest of the tree is the user's); the command releases the
returned ``FolderLock`` when it ends (removing the folder again if it created it and nothing was
written, e.g. after a user error). The lock is the file ``.nnunetv2_vismae.lock`` in the
folder, naming the writer's pid, host, command and start time. A lock of a process of this host
that is gone (kill -9, a crash, a power cut) is taken over; a live one, or one from another host
(a shared file system, where the process cannot be checked), refuses the second writer with one
sentence that says how to clear it. The check and the write happen under ``flock`` on the folder,
so two processes of one host never both take it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import socket
from datetime import datetime
from pathlib import Path

from nnunetv2_vismae.io.atomic import remove_leftovers, write_json_atomic
from nnunetv2_vismae.io.folders import OutputFolderError, make_output_folder

LOCK_FILE = ".nnunetv2_vismae.lock"


def _process_stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/PID/stat`` (the state first, the start time at index 19); None
    where there is no such file (no /proc, or no such process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 19 else None


def _process_start(pid: int) -> str | None:
    stat = _process_stat(pid)
    return stat[19] if stat else None


def _is_running(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host runs (a zombie does not) and is the one that started
    at ``start`` (not a later process given the same pid)."""
    if os.name != "posix":
        return True  # os.kill would end it: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    stat = _process_stat(pid)
    if stat is None:
        return True  # kill(pid, 0) is all there is to know
    return stat[0] not in ("Z", "X") and start in (None, stat[19])


def _is_stale(holder: dict) -> bool:
    """A lock of a process of this host that no longer runs, or an unreadable one."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    return holder.get("host") == socket.gethostname() and not _is_running(pid, holder.get("process_start"))


def _read_holder(path: Path) -> dict | None:
    """The record in the lock file; None if there is none, {} if it cannot be read."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def flocked(path: Path, wait: bool = True, create: bool = False):
    """``flock`` on the folder or file ``path`` (with ``create``: a file, made with its folder if missing),
    released when the holder ends however it ends (a killed process holds nothing); yields whether it is held,
    False only without ``wait`` while another process holds it. Without flock (not POSIX, or a file system
    without it) it yields True, unguarded."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | (os.O_CREAT if create else 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:  # a file system without flock: unguarded
            pass
        yield True
    finally:
        os.close(fd)  # releases the flock


class FolderLock:
    """The exclusive lock of one output folder (a context manager: released on exit)."""

    def __init__(self, folder: str | os.PathLike, command: str, remove_if_empty: bool = False):
        self.folder, self.command, self.remove_if_empty = Path(folder), command, remove_if_empty
        self.path = self.folder / LOCK_FILE
        self.record: dict | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise OutputFolderError (one sentence) if another run holds it."""
        with flocked(self.folder):
            holder = _read_holder(self.path)
            if holder is not None and not _is_stale(holder):
                raise OutputFolderError(self.refusal(holder))
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": self.command,
                "started": datetime.now().isoformat(timespec="seconds"),
                "process_start": _process_start(os.getpid()),
                "token": secrets.token_hex(8),
            }
            write_json_atomic(self.path, record)
            self.record = record
        return self

    def refusal(self, holder: dict) -> str:
        who = (
            f"{holder.get('command', 'another command')} (pid {holder.get('pid')} on host "
            f"{holder.get('host')}, started {holder.get('started')})"
        )
        if holder.get("host") == socket.gethostname():
            return (
                f"Output folder {self.folder} is in use by {who}; wait for that run to end or choose "
                f"another output folder (if no such process runs, delete {self.path})."
            )
        return (
            f"Output folder {self.folder} is in use by {who}, which cannot be checked from host "
            f"{socket.gethostname()}; if no run is going on there, delete {self.path} and rerun."
        )

    def release(self) -> None:
        """Delete the lock file if it is still this lock's (and the folder, if ``remove_if_empty``
        and it is empty now); idempotent."""
        if self.record is None:
            return
        with contextlib.suppress(OSError), flocked(self.folder):
            if _read_holder(self.path) == self.record:
                self.path.unlink()
        self.record = None
        if self.remove_if_empty:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                self.folder.rmdir()

    def __enter__(self) -> "FolderLock":
        return self if self.record is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def claim_output_folder(folder: str | os.PathLike, command: str, subfolders: tuple[str, ...] = ()) -> FolderLock:
    """Check that ``folder`` can be written, create it, lock it for ``command`` and remove what killed
    writers left in it and in ``subfolders`` (glob patterns relative to ``folder``: those ``command``
    writes); the held lock. OutputFolderError (one sentence) if it cannot be used."""
    created = make_output_folder(folder)
    lock = FolderLock(folder, command, remove_if_empty=created).acquire()
    written = [os.path.join(folder, sub) for pattern in subfolders for sub in glob.glob(pattern, root_dir=folder)]
    remove_leftovers([folder, *written])
    return lock
