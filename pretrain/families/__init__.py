"""Encoder families of the pretraining stage, by ``--encoder`` (alias ``--family``) name."""

from pretrain.families.base import EncoderFamily, FamilyOptions, MAEModel
from pretrain.families.cnn import CnnFamily
from pretrain.families.swin import SwinFamily

FAMILIES: dict[str, type[EncoderFamily]] = {SwinFamily.name: SwinFamily, CnnFamily.name: CnnFamily}

__all__ = ["FAMILIES", "CnnFamily", "EncoderFamily", "FamilyOptions", "MAEModel", "SwinFamily"]
