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
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
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
