"""A collapse diagnostic: the effective rank of each encoder stage's features during pretraining.

An encoder whose features have collapsed onto one or two directions (effective rank near 1-2 of
48-384 channels) gives a decoder little to work with, however low its reconstruction loss; a random
encoder's features spread over more directions. The rank is measured on one fixed batch of
unmasked training images, in eval mode and without gradients, so it costs one small forward pass
and changes nothing of the run (no random numbers drawn, weights and data stream untouched).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

RANK_IMAGES = 8  # the fixed batch: small, so measuring adds well under 2% to a run


def effective_rank(matrix: torch.Tensor) -> float:
    """exp of the entropy of the normalized squared singular values of the column-centred N x C
    ``matrix`` (tokens x channels): C for features spread evenly over C directions, 1 for features
    on one line; 0 for features that do not vary at all."""
    if matrix.ndim != 2:
        raise ValueError(f"effective_rank expects a tokens x channels matrix, got shape {tuple(matrix.shape)}.")
    centred = matrix.double() - matrix.double().mean(dim=0, keepdim=True)
    energy = torch.linalg.eigvalsh(centred.T @ centred).clamp_min(0)  # the squared singular values
    total = energy.sum()
    if total <= 0:
        return 0.0
    p = energy / total
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
    return float(torch.exp(entropy))


def tokens_by_channels(features: torch.Tensor) -> torch.Tensor:
    """B x C x spatial... -> (B * positions) x C."""
    return features.movedim(1, -1).reshape(-1, features.shape[1])


@torch.no_grad()
def stage_ranks(
    encoder: nn.Module, images: torch.Tensor, precision: contextlib.AbstractContextManager = contextlib.nullcontext()
) -> list[float]:
    """The effective rank of each stage output of ``encoder`` (called on ``images`` under ``precision``,
    returning one B x C x ... tensor per stage) in eval mode, the encoder's mode restored after; the ranks
    themselves in float64, outside ``precision``."""
    was_training = encoder.training
    encoder.eval()
    try:
        with precision:
            features = encoder(images)
    finally:
        encoder.train(was_training)
    return [effective_rank(tokens_by_channels(f.float())) for f in features]


def rank_columns(stages: int) -> list[str]:
    """The log.csv columns: rank_s1 ... rank_s{stages}."""
    return [f"rank_s{i + 1}" for i in range(stages)]


def rank_line(step: int, ranks: list[float], channels: list[int]) -> str:
    """The progress output's short line, e.g. ``Step 500: feature rank per stage 2.1/48 1.6/96``."""
    per_stage = " ".join(f"{r:.1f}/{c}" for r, c in zip(ranks, channels))
    return f"Step {step}: effective feature rank per stage (of its channels) {per_stage}"
