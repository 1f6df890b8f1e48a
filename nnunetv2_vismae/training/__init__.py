"""nnU-Net trainers for fine-tuning (VisMAETrainer and variants) and their helpers."""

from nnunetv2_vismae.training.trainers import (
    VisMAETrainer,
    VisMAETrainerFrozen,
    VisMAETrainerFrozenScratch,
    VisMAETrainerLLRD,
    VisMAETrainerSawtooth,
    VisMAETrainerScratch,
)

__all__ = [
    "VisMAETrainer",
    "VisMAETrainerFrozen",
    "VisMAETrainerFrozenScratch",
    "VisMAETrainerLLRD",
    "VisMAETrainerSawtooth",
    "VisMAETrainerScratch",
]
