"""Block masking: hide blocks of patches (2D) or cells (N-D), for the whole batch at once on the device."""

from __future__ import annotations

import math

import torch


def window_mask(
    batch: int,
    grid: tuple[int, ...],
    block: int | tuple[int, ...],
    ratio: float,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random block mask over a patch grid of any number of axes.

    The grid is cut into blocks of ``block`` patches per axis (one int: the same on every axis); each
    sample hides exactly ``round(ratio * number of blocks)`` of them, chosen uniformly. The random
    numbers drawn depend only on the number of blocks, so a 2D mask is what it always was.

    Returns a bool tensor B x grid, True = masked (hidden from the encoder).
    """
    blocks_per_axis = (block,) * len(grid) if isinstance(block, int) else tuple(block)
    if len(blocks_per_axis) != len(grid) or any(g % b for g, b in zip(grid, blocks_per_axis)):
        shown = "x".join(map(str, grid))
        raise ValueError(f"patch grid {shown} is not divisible by the mask block size {block}")
    counts = [g // b for g, b in zip(grid, blocks_per_axis)]
    total = math.prod(counts)
    num_masked = int(round(ratio * total))
    noise = torch.rand(batch, total, device=device, generator=generator)
    rank_of_block = noise.argsort(dim=1).argsort(dim=1)  # B x blocks, a random permutation per sample
    hidden = (rank_of_block < num_masked).view(batch, *counts)
    for axis, b in enumerate(blocks_per_axis, start=1):
        hidden = hidden.repeat_interleave(b, dim=axis)
    return hidden
