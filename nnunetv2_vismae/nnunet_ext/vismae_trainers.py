"""Our trainers for nnU-Net's ``nnUNet_extTrainer`` lookup (this folder is imported as top-level modules).

nnU-Net asks ``hasattr(module, name)``: every trainer of ``nnunetv2_vismae.training.TRAINERS`` and every
variant such as ``VisMAETrainer_5epochs`` is resolved by name on demand, and lives in
``nnunetv2_vismae.training`` so that it pickles.
"""

from nnunetv2_vismae.training.variants import trainer_class


def __getattr__(name: str) -> type:
    return trainer_class(name)
