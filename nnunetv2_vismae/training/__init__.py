"""nnU-Net trainers for fine-tuning (VisMAETrainer, nnUNetTrainerMAE and their variants) and their helpers."""

from nnunetv2_vismae.training.cnn_trainers import (
    nnUNetTrainerMAE,
    nnUNetTrainerMAEFrozen,
    nnUNetTrainerMAEFrozenScratch,
    nnUNetTrainerMAELowLR,
    nnUNetTrainerMAEScratch,
    nnUNetTrainerMAEScratchLowLR,
)
from nnunetv2_vismae.training.trainers import (
    VisMAETrainer,
    VisMAETrainerFrozen,
    VisMAETrainerFrozenScratch,
    VisMAETrainerLLRD,
    VisMAETrainerSawtooth,
    VisMAETrainerScratch,
)

# The one list of our trainers: what nnUNetv2_train finds by name (nnunet_ext) and, with nnU-Net's own
# nnUNetTrainer, the bases of the named variants (variants.BASES).
TRAINERS = (
    VisMAETrainer,
    VisMAETrainerScratch,
    VisMAETrainerLLRD,
    VisMAETrainerFrozen,
    VisMAETrainerFrozenScratch,
    VisMAETrainerSawtooth,
    nnUNetTrainerMAE,
    nnUNetTrainerMAEScratch,
    nnUNetTrainerMAELowLR,
    nnUNetTrainerMAEScratchLowLR,
    nnUNetTrainerMAEFrozen,
    nnUNetTrainerMAEFrozenScratch,
)
__all__ = ["TRAINERS", *(cls.__name__ for cls in TRAINERS)]
