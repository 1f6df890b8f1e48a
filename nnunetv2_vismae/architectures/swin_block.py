"""timm's Swin block without the wasted work on padded tokens.

A feature map that is not a multiple of the window (nnU-Net's power-of-two patches against Swin's
window of 7: 4x4 tokens in a 7x7 window, 8x8 in 14x14) is zero-padded before window attention,
and timm runs the qkv and output projections on the padding as well, up to three times the real
tokens. Here the projections run on the real tokens only: a padded token's q, k and v are the qkv
bias (the projection of zero, exactly what timm computes for it), and its outputs are cropped
before the output projection. The shifted-window mask is also made once per size instead of in
every forward, and attention runs in torch's fused kernel. Same parameters, same function, less work.

It overrides and reads parts of timm's Swin that are not public (``_attn``, ``_get_rel_pos_bias``,
``dynamic_mask``, a ``__class__`` swap): tests/architectures/test_timm_private_api.py names any that a
new timm changes, and pyproject.toml bounds timm to the versions it passed with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import (
    SwinTransformerBlock,
    SwinTransformerStage,
    WindowAttention,
    window_partition,
    window_reverse,
)
from torch import nn


def window_attention(attn: WindowAttention, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Multi-head attention with relative position bias inside each window, before the output projection.

    qkv: windows x N x 3 * attn_dim, all windows of the batch, image by image; mask: None or the
    windows of one image x N x N (0 or -100). Returns windows x N x attn_dim.

    Always torch's fused attention (timm keeps its own behind an experimental switch), with the bias
    and the mask as its additive ``attn_mask``: the same softmax(q k^T * scale + bias + mask) v.
    """
    windows, n, _ = qkv.shape
    heads = attn.num_heads
    q, k, v = qkv.reshape(windows, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    bias = attn._get_rel_pos_bias()  # 1 x heads x N x N, the same in every window
    if mask is not None:  # differs between the windows of an image, the same in every image
        per_image = bias + mask.unsqueeze(1)  # windows of one image x heads x N x N
        # the fused kernels take batch x heads x N x N: one copy per batch, as the scores themselves
        bias = per_image.expand(windows // mask.shape[0], -1, -1, -1, -1).reshape(windows, heads, n, n)
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=bias.to(q.dtype),
        dropout_p=attn.attn_drop.p if attn.training else 0.0,
        scale=attn.scale,
    )
    return out.transpose(1, 2).reshape(windows, n, -1)


class SwinBlock(SwinTransformerBlock):
    """``SwinTransformerBlock`` whose window attention projects only the real tokens (see the module)."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, _ = x.shape
        shift = self.shift_size
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        pad_h, pad_w = (-H) % self.window_size[0], (-W) % self.window_size[1]
        qkv_layer = self.attn.qkv
        if pad_h or pad_w:
            qkv = F.pad(F.linear(x, qkv_layer.weight), (0, 0, 0, pad_w, 0, pad_h))
            qkv = qkv if qkv_layer.bias is None else qkv + qkv_layer.bias.to(qkv.dtype)  # autocast: stay bf16
        else:
            qkv = qkv_layer(x)
        mask = self.window_mask(qkv) if self.dynamic_mask else self.attn_mask
        windows = window_partition(qkv, self.window_size).flatten(1, 2)
        out = window_attention(self.attn, windows, mask)
        out = window_reverse(out.unflatten(1, self.window_size), self.window_size, H + pad_h, W + pad_w)
        out = self.attn.proj_drop(self.attn.proj(out[:, :H, :W]))
        if any(shift):
            out = torch.roll(out, shifts=shift, dims=(1, 2))
        return out

    def window_mask(self, padded: torch.Tensor) -> torch.Tensor | None:
        """timm's shifted-window mask for this padded size, made once per size (timm rebuilds it in
        every forward from many small operations). Under torch.compile the graph makes it from
        constants instead, so the cache neither breaks the graph nor holds a traced tensor."""
        if torch.compiler.is_compiling():
            return self.get_attn_mask(padded)
        key = (*padded.shape[1:3], padded.device, padded.dtype)
        cache = self.__dict__.setdefault("_window_masks", {})  # not a buffer: no state_dict entry
        if key not in cache:
            with torch.inference_mode(False):  # a mask first made under inference mode serves training too
                cache[key] = self.get_attn_mask(padded)
        return cache[key]


def use_swin_blocks(module: nn.Module) -> nn.Module:
    """Turn every timm ``SwinTransformerBlock`` inside ``module`` into a ``SwinBlock`` in place
    (timm builds the blocks inside its stages; the subclass adds no parameters or
    buffers, so names and state dicts are unchanged)."""
    for block in module.modules():
        if type(block) is SwinTransformerBlock:
            block.__class__ = SwinBlock
    return module


def decoder_stage(dim: int, depth: int, num_heads: int, window_size: int) -> SwinTransformerStage:
    """A Swin stage for a decoder: no downsampling, windows of ``window_size`` at any resolution."""
    stage = SwinTransformerStage(
        dim,
        dim,
        (window_size, window_size),
        depth,
        downsample=False,
        num_heads=num_heads,
        window_size=window_size,
        always_partition=True,
        dynamic_mask=True,
    )
    return use_swin_blocks(stage)
