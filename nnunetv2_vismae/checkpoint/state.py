"""Resumable training state files (``state.pt`` of pretraining and of classification).

Written atomically and flushed to disk before the rename, with a format version; read with
``torch.load(weights_only=True)``, so reading one never executes pickled code: a file holding any
other object than tensors and plain containers is refused.
"""

from __future__ import annotations

import os
import pickle

import torch

from nnunetv2_vismae.checkpoint.errors import CheckpointError
from nnunetv2_vismae.checkpoint.format import kind_of_content, looks_like_pickle
from nnunetv2_vismae.io.atomic import atomic_path

STATE_VERSION = 1


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` with its format version; ``WriteError`` (disk full, ...) keeps the previous file."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)


def _first_bytes(path: str | os.PathLike) -> bytes | None:
    """The first 512 bytes of ``path``; None when it cannot be opened (torch.load then says why)."""
    try:
        with open(path, "rb") as f:
            return f.read(512)
    except OSError:
        return None


def load_state(path: str | os.PathLike, advice: str) -> dict:
    """The state in ``path``; ``CheckpointError``, one sentence ending in ``advice`` (what to do with
    the file), if it is unreadable or not plain data."""
    head = _first_bytes(path)
    if head is not None and not looks_like_pickle(head):  # torch.load's errors would call it a pickle
        raise CheckpointError(
            f"{path} is {kind_of_content(head)}, not a training state written by torch.save; {advice}."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("\n\n")[-1].strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers and was refused, "
            f"because unpickling them can run code ({detail[:160]}); {advice}."
        ) from None
    except Exception as e:  # truncated or not a torch file at all
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}); {advice}.") from None
