"""Swin3dUNet: the network class that 3D VisMAE plans name (``nnunetv2_vismae.architectures.Swin3dUNet``)."""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures

from nnunetv2_vismae.architectures.decoders import STEM_CHANNELS, ConvDecoder, check_plans_strides
from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoder, Swin3dEncoderConfig


class Swin3dUNet(AbstractDynamicNetworkArchitectures):
    """The 3D Swin encoder (SwinUNETR's layout) with SwinUNETR's kind of decoder: SwinUNet's conv decoder in 3D.

    Called by nnU-Net's ``get_network_from_plans`` with ``input_channels``, ``num_classes``,
    ``deep_supervision`` and the plain-JSON plans kwargs: ``encoder`` is a ``Swin3dEncoderConfig`` without
    ``in_channels`` (None: SwinUNETR's encoder, feature size 48), ``strides`` what the plans record for
    nnU-Net's deep-supervision targets (it must equal ``output_strides``), ``stem_channels`` the width of the
    full-resolution conv stem. The decoder takes the embedding and every stage's output as skips, with a conv
    stem from the input below the embedding (at full resolution for patch 2, as SwinUNETR's first block).

    Input B x input_channels x D x H x W, each axis divisible by the encoder's ``total_stride`` on that axis
    (32 for SwinUNETR's patch 2 and four stages; the patch may differ per axis, e.g. (1, 2, 2)). Output
    B x num_classes x D x H x W, or with deep supervision a list of them at ``output_strides``, highest
    resolution first.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        encoder: dict | None = None,
        strides=None,
        stem_channels: int = STEM_CHANNELS,
    ):
        super().__init__()
        config = Swin3dEncoderConfig.from_json({**(encoder or {}), "in_channels": input_channels})
        self.encoder = Swin3dEncoder(config)
        # the encoder's maps are layer-normed already where the config says so (SwinUNETR's normalize=True)
        self.decoder = ConvDecoder(
            input_channels,
            config.stage_dims,
            config.patch_size,
            num_classes,
            deep_supervision,
            stem_channels,
            normalize_skips=False,
        )
        check_plans_strides("Swin3dUNet", self.output_strides(config), strides)
        self.key_to_encoder = "encoder"
        self.key_to_stem = "encoder.patch_embed"
        self.keys_to_in_proj = ("encoder.patch_embed.proj",)

    @staticmethod
    def output_strides(config: Swin3dEncoderConfig) -> list[list[int]]:
        """Per-stage strides in nnU-Net's ``strides`` convention (first is [1, 1, 1])."""
        return ConvDecoder.output_strides(config.patch_size, len(config.stage_dims))

    def forward(self, x: torch.Tensor):
        return self.decoder(x, self.encoder(x))
