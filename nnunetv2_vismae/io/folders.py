"""Whether an output folder can be written, asked before a command starts its work."""

from __future__ import annotations

import os
from pathlib import Path

from nnunetv2_vismae.errors import UserError


class OutputFolderError(UserError):
    """An output folder cannot be used (not writable, a file, in use by another run): one
    sentence that commands print as it is, with a non-zero exit."""


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """None if ``folder`` is (or can be created as) a writable folder; else why not, e.g.
    ``"/data is not writable"``. Checks the folder, or its nearest existing parent."""
    existing = Path(folder).absolute()
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as e:  # a name longer than the file system allows
        return (e.strerror or str(e)).lower()
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def check_output_folder(folder: str | os.PathLike) -> None:
    """OutputFolderError unless ``folder`` is (or can be created as) a writable folder."""
    problem = unwritable_reason(folder)
    if problem:
        raise OutputFolderError(f"Output folder {folder} cannot be written: {problem}.")


def make_output_folder(folder: str | os.PathLike) -> bool:
    """Create ``folder`` (and its parents) after ``check_output_folder``; whether it was created.
    OutputFolderError (one sentence) where the file system refuses, e.g. under /proc."""
    check_output_folder(folder)
    created = not os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputFolderError(f"Cannot create the output folder {folder}: {e.strerror or e}.") from None
    return created
