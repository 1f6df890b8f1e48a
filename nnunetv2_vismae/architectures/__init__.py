"""Networks: the shared Swin encoder and the SwinUNet that nnU-Net plans name; the 3D Swin and its Swin3dUNet."""

from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoder, Swin3dEncoderConfig
from nnunetv2_vismae.architectures.swin3d_unet import Swin3dUNet
from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder, SwinEncoderConfig
from nnunetv2_vismae.architectures.swin_unet import SwinUNet

__all__ = ["Swin3dEncoder", "Swin3dEncoderConfig", "Swin3dUNet", "SwinEncoder", "SwinEncoderConfig", "SwinUNet"]
