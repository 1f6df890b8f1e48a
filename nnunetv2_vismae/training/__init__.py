"""nnU-Net trainers for fine-tuning (VisMAETrainer and variants) and their helpers."""
from nnunetv2_vismae.training.trainers import VisMAETrainer, VisMAETrainerScratch

__all__ = ["VisMAETrainer", "VisMAETrainerScratch"]
