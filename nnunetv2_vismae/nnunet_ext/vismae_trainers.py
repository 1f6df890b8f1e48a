"""Re-exports for nnU-Net's ``nnUNet_extTrainer`` lookup (this folder is imported as top-level modules).

The classes live in ``nnunetv2_vismae.training`` so that they pickle; variants such as
``VisMAETrainer_5epochs`` are resolved by name on demand.
"""

from nnunetv2_vismae.training.trainers import (  # noqa: F401
    VisMAETrainer,
    VisMAETrainerFrozen,
    VisMAETrainerFrozenScratch,
    VisMAETrainerLLRD,
    VisMAETrainerSawtooth,
    VisMAETrainerScratch,
)
from nnunetv2_vismae.training.cnn_trainers import (  # noqa: F401
    nnUNetTrainerMAE,
    nnUNetTrainerMAEFrozen,
    nnUNetTrainerMAEFrozenScratch,
    nnUNetTrainerMAELowLR,
    nnUNetTrainerMAEScratch,
    nnUNetTrainerMAEScratchLowLR,
)
from nnunetv2_vismae.training.variants import make_variant


def __getattr__(name: str):
    return make_variant(name)
