"""The arithmetic of the original Swin-MAE / VIS-MAE encoder blocks, written out for equivalence tests.

The original blocks shift every odd block by half a window, also where a stage is one window
wide (the 7x7 last stage at 224), and mask attention across the regions the cyclic shift brings
together (the standard shifted-window mask). Written here from that description, plainly and
without timm, on the parameters of a module with timm's (our encoder's) names; it handles maps
that are a multiple of the window, which every stage is at 224.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_position_index(window: int) -> torch.Tensor:
    """N x N (N = window^2) row of each token pair's relative offset in the (2w-1)^2 bias table."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dy = rows[:, None] - rows[None, :] + window - 1
    dx = cols[:, None] - cols[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def _region(position: int, size: int, window: int, shift: int) -> int:
    """Which of the three bands along one axis a position of the rolled map lies in: the part that
    stayed in place, the last window's unshifted part, or what the roll wrapped around."""
    return 0 if position < size - window else 1 if position < size - shift else 2


def to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """B x H x W x C -> (B * windows) x window^2 x C, windows row by row."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def from_windows(x: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """windows x N x N: 0 between tokens of the same region of the rolled map, -100 otherwise."""
    labels = torch.tensor(
        [[3 * _region(r, h, window, shift) + _region(c, w, window, shift) for c in range(w)] for r in range(h)],
        dtype=torch.float32,
    )
    labels = to_windows(labels[None, :, :, None], window)[..., 0]
    return torch.where(labels[:, :, None] == labels[:, None, :], 0.0, -100.0)


def original_block(block, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """One Swin block as the original code computes it. x: B x H x W x C (H, W multiples of window)."""
    b, h, w, c = x.shape
    heads = block.attn.num_heads
    n = window * window
    y = F.layer_norm(x, (c,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    if shift:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
    tokens = to_windows(y, window)
    qkv = F.linear(tokens, block.attn.qkv.weight, block.attn.qkv.bias)
    q, k, v = qkv.view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    scores = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    table = block.attn.relative_position_bias_table
    scores = scores + table[relative_position_index(window).flatten()].view(n, n, heads).permute(2, 0, 1)
    if shift:
        mask = shifted_window_mask(h, w, window, shift)
        scores = (scores.view(b, -1, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, n, c)
    out = from_windows(F.linear(out, block.attn.proj.weight, block.attn.proj.bias), window, b, h, w)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    x = x + out
    y = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
    y = F.linear(
        F.gelu(F.linear(y, block.mlp.fc1.weight, block.mlp.fc1.bias)), block.mlp.fc2.weight, block.mlp.fc2.bias
    )
    return x + y


def original_stages(model, image: torch.Tensor, window: int) -> list[torch.Tensor]:
    """NCHW stage outputs of the original encoder with ``model``'s parameters (our encoder or a timm
    SwinTransformer): odd blocks shifted by window // 2 in every stage. The original encoder has no
    final norm: its last stage's output is what its decoder reads (``model.norm`` is not used)."""
    x = model.patch_embed(image)
    outputs = []
    for stage in model.layers:
        x = stage.downsample(x)  # patch merging; its order of neighbours is tested with the converter
        for j, block in enumerate(stage.blocks):
            x = original_block(block, x, window, window // 2 if j % 2 else 0)
        outputs.append(x)
    return [o.permute(0, 3, 1, 2) for o in outputs]
