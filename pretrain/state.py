"""The resumable training state ``state.pt``: tensors and plain containers only, written atomically.

Loaded with ``torch.load(weights_only=True)``, so reading it never executes pickled code.
RNG streams are not stored: masks, stochastic depth and data are drawn from generators seeded by
(seed, rank, step) or (seed, rank, sample index), so every rank resumes them exactly.
"""
from __future__ import annotations

import os

import torch

STATE_FILE = "state.pt"
STATE_VERSION = 1


def save_state(path: str, state: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"version": STATE_VERSION, **state}, tmp)
    os.replace(tmp, path)


def load_state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
