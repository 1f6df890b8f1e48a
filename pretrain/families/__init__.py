"""Encoder families of the pretraining stage, by ``--encoder`` (alias ``--family``) name."""

from pretrain.families.base import FamilyOptions, MAEModel, PretrainingFamily
from pretrain.families.cnn import CnnFamily
from pretrain.families.swin import SwinFamily

FAMILIES: dict[str, type[PretrainingFamily]] = {SwinFamily.name: SwinFamily, CnnFamily.name: CnnFamily}
DEFAULT_FAMILY = SwinFamily.name  # VIS-MAE's

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "CnnFamily", "FamilyOptions", "MAEModel", "PretrainingFamily", "SwinFamily"]
