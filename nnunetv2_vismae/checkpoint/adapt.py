"""Tensor adapters: reconcile a checkpoint tensor with a network tensor of a different shape.

An adapter is called as ``adapter(name, value, target, encoder)`` with the checkpoint tensor
``value``, the network's current tensor ``target`` (same name, relative to the encoder) and the
encoder module. It returns ``(new_value, description)`` when it applies, else None. Adapters only
compute new tensors; they never modify the network.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional

import torch
from torch import nn

TensorAdapter = Callable[[str, torch.Tensor, torch.Tensor, nn.Module], Optional[tuple[torch.Tensor, str]]]


def remap_input_channels(weight: torch.Tensor, new_channels: int) -> torch.Tensor:
    """Conv/linear weight (out x in x ...) -> (out x new_channels x ...), same response to a
    constant image (all input channels equal).

    More channels: new channel j copies old channel ``j % old`` and is divided by how many new
    channels copy that old one (``old / new`` when ``new`` is a multiple of ``old``).
    Fewer channels: new channel j is the sum of the old channels ``c`` with ``c % new == j``.
    Either way the weights summed over the input channels are unchanged.
    """
    old = weight.shape[1]
    w = weight.detach().to(torch.float32)
    if new_channels >= old:
        source = torch.arange(new_channels) % old
        uses = torch.bincount(source, minlength=old).to(torch.float32)
        scale = (1.0 / uses[source]).view(1, new_channels, *([1] * (w.ndim - 2)))
        out = w[:, source] * scale
    else:
        out = torch.zeros((w.shape[0], new_channels, *w.shape[2:]), dtype=torch.float32)
        out.index_add_(1, torch.arange(old) % new_channels, w)
    return out.to(weight.dtype).contiguous()


def in_channels_adapter(weight_name: str) -> TensorAdapter:
    """Adapter for the input projection ``weight_name``: different number of input channels."""

    def adapt(name, value, target, encoder):
        if (
            name != weight_name
            or value.ndim != target.ndim
            or value.ndim < 2
            or value.shape[0] != target.shape[0]
            or value.shape[1] == target.shape[1]
        ):
            return None
        old, new = value.shape[1], target.shape[1]
        how = (
            f"repeated and rescaled by {old}/{new}"
            if new % old == 0
            else "copied cyclically and rescaled"
            if new > old
            else "summed into fewer channels"
        )
        return (
            remap_input_channels(value, new),
            f"input channels {old} -> {new} ({how}; same response to a constant image)",
        )

    return adapt


def patch_size_adapter(weight_name: str) -> TensorAdapter:
    """Adapter for the patch-embedding conv ``weight_name``: different patch (kernel) size,
    resampled with timm's ``resample_patch_embed`` (FlexiViT pseudo-inverse resampling)."""

    def adapt(name, value, target, encoder):
        if (
            name != weight_name
            or value.ndim != 4
            or target.ndim != 4
            or value.shape[:2] != target.shape[:2]
            or value.shape[2:] == target.shape[2:]
        ):
            return None
        from timm.layers import resample_patch_embed

        new = resample_patch_embed(value.detach().to(torch.float32), list(target.shape[2:]))
        old_hw, new_hw = "x".join(map(str, value.shape[2:])), "x".join(map(str, target.shape[2:]))
        return (
            new.to(value.dtype).contiguous(),
            f"patch size {old_hw} -> {new_hw} (resampled with timm resample_patch_embed)",
        )

    return adapt


def window_of_table(rows: int) -> Optional[int]:
    """Window size w of a relative position table with (2w-1)^2 rows, else None."""
    side = math.isqrt(rows)
    return (side + 1) // 2 if side * side == rows and side % 2 == 1 else None


def relative_position_table_adapter(name, value, target, encoder):
    """Swin ``relative_position_bias_table`` ((2W-1)^2 x heads) of another window size W,
    resized with timm's ``resize_rel_pos_bias_table``."""
    suffix = "relative_position_bias_table"
    if (
        not name.endswith(suffix)
        or value.ndim != 2
        or target.ndim != 2
        or value.shape[1] != target.shape[1]
        or value.shape[0] == target.shape[0]
    ):
        return None
    old_window = window_of_table(value.shape[0])
    owner_name = name[: -len(suffix)].rstrip(".")
    owner = encoder.get_submodule(owner_name) if owner_name else encoder
    new_window = getattr(owner, "window_size", None)
    if isinstance(new_window, int):
        new_window = (new_window, new_window)
    if new_window is None:
        side = window_of_table(target.shape[0])
        new_window = (side, side) if side else None
    if old_window is None or new_window is None:
        return None
    if (2 * new_window[0] - 1) * (2 * new_window[1] - 1) != target.shape[0]:
        return None
    from timm.layers import resize_rel_pos_bias_table

    with warnings.catch_warnings():  # timm's interpolator trips torch indexing/perf warnings
        warnings.simplefilter("ignore", UserWarning)
        new = resize_rel_pos_bias_table(
            value.detach().to(torch.float32), new_window_size=tuple(new_window), new_bias_shape=tuple(target.shape)
        )
    window = "x".join(map(str, new_window))
    return (
        new.to(value.dtype).contiguous(),
        f"window {old_window}x{old_window} -> {window} (relative position bias table "
        f"{value.shape[0]} -> {target.shape[0]} rows, timm resize_rel_pos_bias_table)",
    )
