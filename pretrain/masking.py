"""VIS-MAE window masking: hide square blocks of patches, for the whole batch at once on the device."""

from __future__ import annotations

import torch


def window_mask(
    batch: int, grid: tuple[int, int], block: int, ratio: float, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random block mask over a patch grid.

    The h x w patch grid is cut into (h / block) x (w / block) blocks of block x block patches;
    each sample hides exactly ``round(ratio * number of blocks)`` of them, chosen uniformly.

    Returns a bool tensor B x h x w, True = masked (hidden from the encoder).
    """
    h, w = grid
    if h % block or w % block:
        raise ValueError(f"patch grid {h}x{w} is not divisible by the mask block size {block}")
    bh, bw = h // block, w // block
    num_masked = int(round(ratio * bh * bw))
    noise = torch.rand(batch, bh * bw, device=device, generator=generator)
    rank_of_block = noise.argsort(dim=1).argsort(dim=1)  # B x blocks, a random permutation per sample
    blocks = (rank_of_block < num_masked).view(batch, bh, bw)
    return blocks.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)
