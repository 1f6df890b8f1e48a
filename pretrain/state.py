"""The resumable training state ``<output>/state.pt``, kept by ``nnunetv2_vismae.checkpoint.state``
(versioned, fsynced, atomic, read without executing pickled code).

RNG streams are not stored: masks, stochastic depth and data are drawn from generators seeded by
(seed, rank, step) or (seed, rank, sample index), so every rank resumes them exactly.
"""

from __future__ import annotations

from nnunetv2_vismae.checkpoint import CheckpointError, state
from nnunetv2_vismae.checkpoint.state import save_state
from pretrain.errors import PretrainUserError

__all__ = ["load_state", "save_state"]


def load_state(path: str) -> dict:
    """The state in ``path``; PretrainUserError (one sentence) if it is unreadable or not plain data."""
    try:
        return state.load_state(path, "move it away to start a new run in this folder")
    except CheckpointError as e:
        raise PretrainUserError(str(e)) from None
