"""The resumable training state ``state.pt``: tensors and plain containers only, written atomically.

Loaded with ``torch.load(weights_only=True)``, so reading it never executes pickled code.
RNG streams are not stored: masks, stochastic depth and data are drawn from generators seeded by
(seed, rank, step) or (seed, rank, sample index), so every rank resumes them exactly.
"""
from __future__ import annotations

import torch

from nnunetv2_vismae.io.atomic import atomic_path

STATE_FILE = "state.pt"
STATE_VERSION = 1


def save_state(path: str, state: dict) -> None:
    with atomic_path(path, fsync=True) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)


def load_state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
