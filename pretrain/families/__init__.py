"""Encoder families of the pretraining stage, by ``--family`` name."""
from pretrain.families.base import EncoderFamily, MAEModel
from pretrain.families.swin import SwinFamily

FAMILIES: dict[str, type[EncoderFamily]] = {SwinFamily.name: SwinFamily}

__all__ = ["FAMILIES", "EncoderFamily", "MAEModel", "SwinFamily"]
