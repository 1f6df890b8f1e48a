"""Encoder families of the pretraining stage, by ``--encoder`` (alias ``--family``) name."""

from pretrain.families.base import FamilyOptions, MAEModel, PretrainingFamily
from pretrain.families.cnn import CnnFamily
from pretrain.families.swin import SwinFamily
from pretrain.families.swin3d import Swin3dFamily

FAMILIES: dict[str, type[PretrainingFamily]] = {
    SwinFamily.name: SwinFamily,
    Swin3dFamily.name: Swin3dFamily,
    CnnFamily.name: CnnFamily,
}
DEFAULT_FAMILY = SwinFamily.name  # VIS-MAE's

__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "CnnFamily",
    "FamilyOptions",
    "MAEModel",
    "PretrainingFamily",
    "Swin3dFamily",
    "SwinFamily",
]
