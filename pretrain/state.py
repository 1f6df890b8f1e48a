"""The resumable training state ``state.pt``: tensors and plain containers only, written atomically.

Loaded with ``torch.load(weights_only=True)``, so reading it never executes pickled code: a file
holding any other object is refused. RNG streams are not stored: masks, stochastic depth and data
are drawn from generators seeded by (seed, rank, step) or (seed, rank, sample index), so every
rank resumes them exactly.
"""
from __future__ import annotations

import pickle

import torch

from nnunetv2_vismae.io.atomic import atomic_path
from pretrain.errors import PretrainUserError

STATE_FILE = "state.pt"
STATE_VERSION = 1


def save_state(path: str, state: dict) -> None:
    """Write ``state`` atomically; ``WriteError`` (disk full, ...) keeps the previous file."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)


def _first_bytes(path: str) -> bytes | None:
    """The first 512 bytes of ``path``; None when it cannot be opened (torch.load then says why)."""
    try:
        with open(path, "rb") as f:
            return f.read(512)
    except OSError:
        return None


def load_state(path: str) -> dict:
    """The state in ``path``; PretrainUserError (one sentence) if it is unreadable or not plain data."""
    from nnunetv2_vismae.checkpoint.format import kind_of_content, looks_like_pickle

    head = _first_bytes(path)
    if head is not None and not looks_like_pickle(head):  # torch.load's errors would call it a pickle
        raise PretrainUserError(f"{path} is {kind_of_content(head)}, not a training state written by "
                                "torch.save; move it away to start a new run in this folder.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("\n\n")[-1].strip().splitlines()[0] if str(e).strip() else ""
        raise PretrainUserError(f"{path} holds objects other than tensors and plain containers and was refused, "
                                f"because unpickling them can run code ({detail[:160]}); move it away to start "
                                "a new run in this folder.") from None
    except Exception as e:  # truncated or not a torch file at all
        raise PretrainUserError(f"{path} cannot be read ({type(e).__name__}); move it away to start a new run "
                                "in this folder.") from None

