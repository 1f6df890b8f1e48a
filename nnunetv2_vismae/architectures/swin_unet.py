"""SwinUNet: the network class that VisMAE plans name (``nnunetv2_vismae.architectures.SwinUNet``)."""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures

from nnunetv2_vismae.architectures.decoders import STEM_CHANNELS, ConvDecoder, SwinDecoder, check_plans_strides
from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder, SwinEncoderConfig

CONV_DECODER, SWIN_DECODER = "conv", "swin"  # the decoders plans may name (not encoder families)
DECODERS = (CONV_DECODER, SWIN_DECODER)


class SwinUNet(AbstractDynamicNetworkArchitectures):
    """VIS-MAE Swin encoder with a ``swin`` (Swin-UNet) or ``conv`` (SwinUNETR-style) decoder.

    Called by nnU-Net's ``get_network_from_plans`` with ``input_channels``, ``num_classes``,
    ``deep_supervision`` and the plain-JSON plans kwargs. ``strides`` is what the plans record for
    nnU-Net's deep-supervision targets; it must equal the decoder's output strides. ``stem_channels``
    is the full-resolution width of the conv decoder's stem (ignored by the swin decoder).

    Input B x input_channels x H x W, with H and W divisible by ``encoder.total_stride`` (32 by
    default). Output B x num_classes x H x W, or with deep supervision a list of them at
    ``output_strides`` scales, highest resolution first.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
        encoder: dict | None = None,
        decoder: str = "conv",
        strides=None,
        stem_channels: int = STEM_CHANNELS,
    ):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"SwinUNet decoder must be one of {DECODERS}, got {decoder!r}.")
        config = SwinEncoderConfig.from_json({**(encoder or {}), "in_channels": input_channels})
        self.encoder = SwinEncoder.from_config(config)
        self.decoder_name = decoder
        if decoder == SWIN_DECODER:
            self.decoder = SwinDecoder(
                config.stage_dims,
                config.depths,
                config.num_heads,
                config.window_size,
                config.patch_size,
                num_classes,
                deep_supervision,
            )
        else:
            self.decoder = ConvDecoder(
                input_channels,
                config.stage_dims,
                (config.patch_size,) * 2,
                num_classes,
                deep_supervision,
                stem_channels,
            )
        check_plans_strides(f"SwinUNet with the {decoder} decoder", self.output_strides(config, decoder), strides)
        self.key_to_encoder = "encoder"
        self.key_to_stem = "encoder.patch_embed"
        self.keys_to_in_proj = ("encoder.patch_embed.proj",)

    @staticmethod
    def output_strides(config: SwinEncoderConfig, decoder: str) -> list[list[int]]:
        """Per-stage strides in nnU-Net's ``strides`` convention (first is [1, 1])."""
        if decoder == SWIN_DECODER:
            return SwinDecoder.output_strides(config.patch_size, len(config.depths))
        return ConvDecoder.output_strides((config.patch_size,) * 2, len(config.depths))

    def forward(self, x: torch.Tensor):
        features = self.encoder(x)
        if self.decoder_name == SWIN_DECODER:
            return self.decoder(features)
        return self.decoder(x, features)
