"""Networks: the shared Swin encoder and the SwinUNet that nnU-Net plans name."""

from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder, SwinEncoderConfig
from nnunetv2_vismae.architectures.swin_unet import SwinUNet

__all__ = ["SwinEncoder", "SwinEncoderConfig", "SwinUNet"]
