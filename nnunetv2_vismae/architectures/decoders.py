"""Segmentation decoders for the Swin encoder.

Both return the segmentation nnU-Net expects: one tensor, or with deep supervision a list,
highest resolution first, at the scales given by ``output_strides`` (which the plans write as
``strides`` so that nnU-Net down-samples its targets to match).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from torch import nn

from nnunetv2_vismae.architectures.swin_block import decoder_stage


class PatchExpand(nn.Module):
    """Swin-UNet patch expanding: B x H x W x C -> B x sH x sW x C_out (linear, then pixel shuffle)."""

    def __init__(self, dim: int, out_dim: int, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, out_dim * scale * scale, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(x).permute(0, 3, 1, 2)
        x = F.pixel_shuffle(x, self.scale).permute(0, 2, 3, 1)
        return self.norm(x)


class SwinDecoder(nn.Module):
    """VIS-MAE's Swin-UNet decoder: patch expanding and Swin blocks with skip connections.

    Input: the encoder's stage features (NCHW, highest resolution first).
    Outputs at strides 1 (after a final x``patch_size`` expansion), then each decoder stage.
    """

    def __init__(
        self,
        stage_dims: list[int],
        depths,
        num_heads,
        window_size: int,
        patch_size: int,
        num_classes: int,
        deep_supervision: bool,
    ):
        super().__init__()
        self.deep_supervision = deep_supervision
        n = len(stage_dims)
        self.expands = nn.ModuleList(PatchExpand(stage_dims[i + 1], stage_dims[i]) for i in reversed(range(n - 1)))
        self.fuse = nn.ModuleList(nn.Linear(2 * stage_dims[i], stage_dims[i]) for i in reversed(range(n - 1)))
        self.stages = nn.ModuleList(
            decoder_stage(stage_dims[i], depths[i], num_heads[i], window_size) for i in reversed(range(n - 1))
        )
        self.norm = nn.LayerNorm(stage_dims[0])
        self.final_expand = PatchExpand(stage_dims[0], stage_dims[0], scale=patch_size)
        self.seg_layers = nn.ModuleList(
            [nn.Conv2d(stage_dims[0], num_classes, 1)]
            + [nn.Conv2d(stage_dims[i], num_classes, 1) for i in range(n - 1)]
        )

    @staticmethod
    def output_strides(patch_size: int, num_stages: int) -> list[list[int]]:
        return [[1, 1], [patch_size] * 2] + [[2, 2]] * (num_stages - 1)

    def forward(self, features: list[torch.Tensor]):
        x = features[-1].permute(0, 2, 3, 1)
        stage_outputs = []
        for expand, fuse, stage, skip in zip(self.expands, self.fuse, self.stages, reversed(features[:-1])):
            x = expand(x)
            x = stage(fuse(torch.cat((x, skip.permute(0, 2, 3, 1)), dim=-1)))
            stage_outputs.append(x)
        full = self.final_expand(self.norm(x)).permute(0, 3, 1, 2)
        seg = self.seg_layers[0](full)
        if not self.deep_supervision:
            return seg
        # stage_outputs run low -> high resolution; seg_layers[1 + i] matches stage dim i
        lower = [self.seg_layers[1 + i](s.permute(0, 3, 1, 2)) for i, s in enumerate(reversed(stage_outputs))]
        return [seg] + lower


class ConvStem(nn.Module):
    """Full- and half-resolution conv skips (UNETR/SwinUNETR style) computed from the raw input."""

    def __init__(self, in_channels: int, channels: list[int], strides: list[list[int]], conv_op, conv_kwargs: dict):
        super().__init__()
        self.stages = nn.ModuleList(
            StackedConvBlocks(2, conv_op, c_in, c_out, 3, stride, **conv_kwargs)
            for c_in, c_out, stride in zip([in_channels] + channels[:-1], channels, strides)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def check_plans_strides(network: str, expected: list[list[int]], strides) -> None:
    """ValueError (one sentence) when the plans' ``strides`` (None: not given) are not the network's output strides:
    nnU-Net would down-sample the deep-supervision targets to other scales than the outputs'."""
    if strides is not None and [list(s) for s in strides] != expected:
        raise ValueError(
            f"{network} produces outputs at strides {expected}, but the plans say {strides}; "
            "re-run nnUNetv2_vismae_plan."
        )


STEM_CHANNELS = 16  # full-resolution width of ConvDecoder's conv stem; recorded in the plans


CONV_OPS = {2: (nn.Conv2d, nn.InstanceNorm2d), 3: (nn.Conv3d, nn.InstanceNorm3d)}  # by spatial dimensions


class ConvDecoder(nn.Module):
    """Convolutional U-Net decoder over a conv stem and the Swin stages, in 2D or 3D.

    Uses dynamic-network-architectures' ``UNetDecoder`` (transposed conv, concatenation, conv
    blocks, deep-supervision heads), so it behaves exactly like nnU-Net's own decoder.
    With ``normalize_skips``, Swin skips are layer-normalised (no parameters) before use, as in
    SwinUNETR; without, the encoder returns them normalised already (the 3D Swin's normalize_outputs).

    ``patch_size`` is the encoder's patch per axis (a power of two each, the largest at least 2): the
    stem's stages run at strides 1, 2, ... up to half the largest patch axis, each axis halved until it
    reaches its own patch, so an anisotropic patch (1, 2, 2) gets a full-resolution stage only.

    The conv stem is ``stem_channels`` wide at full resolution and doubles per stage. 16 (as
    TransUNet's full-resolution decoder) rather than nnU-Net's 32: at 32, the convolutions at full
    and half resolution (stem and decoder) cost more FLOPs than the whole Swin encoder, and a
    bare-network training step (batch 8, 128x128, one CPU thread) took 2.39 s at 16 and 3.22 s at 32
    against 2.92 s for nnU-Net's default 2D U-Net.
    """

    def __init__(
        self,
        in_channels: int,
        stage_dims: list[int],
        patch_size: tuple[int, ...],
        num_classes: int,
        deep_supervision: bool,
        stem_channels: int = STEM_CHANNELS,
        normalize_skips: bool = True,
    ):
        super().__init__()
        self.normalize_skips = normalize_skips
        strides = self.output_strides(patch_size, len(stage_dims))
        n_stem = self.num_stem_stages(patch_size)
        stem_dims = [min(stem_channels * 2**i, stage_dims[0]) for i in range(n_stem)]
        conv_op, norm_op = CONV_OPS[len(patch_size)]
        conv_kwargs = dict(
            conv_bias=True,
            norm_op=norm_op,
            norm_op_kwargs={"eps": 1e-5, "affine": True},
            dropout_op=None,
            dropout_op_kwargs=None,
            nonlin=nn.LeakyReLU,
            nonlin_kwargs={"inplace": True},
        )
        self.stem = ConvStem(in_channels, stem_dims, strides[:n_stem], conv_op, conv_kwargs)
        spec = SimpleNamespace(
            output_channels=stem_dims + list(stage_dims),
            strides=strides,
            kernel_sizes=[[3] * len(patch_size)] * (n_stem + len(stage_dims)),
            conv_op=conv_op,
            **conv_kwargs,
        )
        self.unet = UNetDecoder(spec, num_classes, 2, deep_supervision)

    @staticmethod
    def num_stem_stages(patch_size: tuple[int, ...]) -> int:
        """Conv stages at strides 1, 2, ..., max(patch_size) / 2, filling the gap below the Swin stages."""
        n = int(math.log2(max(patch_size)))
        if max(patch_size) < 2 or any(p < 1 or 2 ** int(math.log2(p)) != p for p in patch_size):
            shown = patch_size[0] if len(set(patch_size)) == 1 else list(patch_size)
            raise ValueError(f"The conv decoder needs a power-of-two encoder patch size >= 2, got {shown}.")
        return n

    @classmethod
    def output_strides(cls, patch_size: tuple[int, ...], num_maps: int) -> list[list[int]]:
        """Each stage's stride over the one before (nnU-Net's ``strides``), for a stem and ``num_maps`` encoder
        maps (the first at ``patch_size``, each next one at twice the stride of the one before)."""
        n_stem = cls.num_stem_stages(patch_size)
        scales = [[min(2**i, p) for p in patch_size] for i in range(n_stem)] + [list(patch_size)]
        strides = [[1] * len(patch_size)] + [[b // a for a, b in zip(*pair)] for pair in zip(scales, scales[1:])]
        return strides + [[2] * len(patch_size)] * (num_maps - 1)

    @property
    def deep_supervision(self) -> bool:
        return self.unet.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool):
        self.unet.deep_supervision = enabled

    def forward(self, image: torch.Tensor, features: list[torch.Tensor]):
        if self.normalize_skips:
            features = [F.layer_norm(f.movedim(1, -1), f.shape[1:2]).movedim(-1, 1) for f in features]
        return self.unet(self.stem(image) + features)
