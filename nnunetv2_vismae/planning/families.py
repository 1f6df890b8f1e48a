"""The planning stage's family registry: for a checkpoint of each encoder family, which plans
``nnUNetv2_vismae_plan`` derives from a dataset's nnU-Net plans, under which name, and which trainer
fine-tunes with them. Keyed by the family names of the checkpoint format; torch-free, so that the
benchmark can read it without loading torch (the derivations import what they need when called).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D
from nnunetv2_vismae.planning.errors import PlanningError


@dataclass(frozen=True)
class PlanRequest:
    """What one ``nnUNetv2_vismae_plan`` call derives from."""

    plans: dict  # the source nnU-Net plans
    source_plans: str  # their identifier (-p)
    target_plans: str  # the identifier of the plans to write
    folder: Path  # the dataset's preprocessed folder, where they are written
    decoder: str  # --decoder
    checkpoint: Optional[object] = None  # the EncoderCheckpoint read from --pretrained
    reference: Optional[dict] = None  # what the plans record of it (checkpoint.reference)
    configuration: str = CONFIGURATION_2D  # -c: the configuration of ``plans`` derived (and written)
    checkpoint_network: bool = False  # --checkpoint-network: the checkpoint's network on the configuration's data


@dataclass(frozen=True)
class FamilyPlanning:
    plans: str  # the identifier written by default
    trainer: str  # the trainer that fine-tunes with these plans (nnUNetv2_train -tr)
    needs_checkpoint: bool  # the network is the one a checkpoint was pretrained for: no plans without one
    derive: Callable[[PlanRequest], dict]  # the plans to write
    spatial_dims: tuple[int, ...]  # the dimensions of the configurations it plans
    unplanned_dims: str = ""  # why it plans no others (ends a sentence)


def _derive_swin(request: PlanRequest) -> dict:
    """VisMAE plans: SwinUNet with the checkpoint's encoder, or the default encoder without one."""
    from nnunetv2_vismae.architectures import SwinEncoderConfig
    from nnunetv2_vismae.planning.vismae_plans import derive_vismae_plans

    config = request.checkpoint.encoder_config if request.checkpoint else {}
    encoder = SwinEncoderConfig.from_json(config) if config else SwinEncoderConfig()
    return derive_vismae_plans(request.plans, request.target_plans, encoder, request.decoder, request.reference)


def _derive_swin3d(request: PlanRequest) -> dict:
    """3D VisMAE plans: Swin3dUNet with the checkpoint's encoder, or SwinUNETR's encoder (feature size 48) without
    one; the encoder's patch is the checkpoint's (a fixed key: its weights were trained on it), (2, 2, 2) without."""
    from nnunetv2_vismae.architectures import Swin3dEncoderConfig
    from nnunetv2_vismae.architectures.swin_unet import CONV_DECODER
    from nnunetv2_vismae.planning.vismae_plans import derive_vismae3d_plans

    if request.decoder != CONV_DECODER:
        raise PlanningError(
            f"--decoder {request.decoder} is one of SwinUNet's (2D); Swin3dUNet has the {CONV_DECODER} decoder only, "
            f"so leave --decoder out on {request.configuration}."
        )
    config = request.checkpoint.encoder_config if request.checkpoint else {}
    encoder = Swin3dEncoderConfig.from_json(config) if config else Swin3dEncoderConfig()
    return derive_vismae3d_plans(request.plans, request.target_plans, encoder, request.reference)


def _derive_cnn(request: PlanRequest) -> dict:
    """MAE plans, once the checkpoint is the encoder of the source plans' network, or with the checkpoint's own
    network where it is another (--checkpoint-network)."""
    from nnunetv2_vismae.planning.cnn_plans import (
        check_checkpoint_fits,
        derive_checkpoint_network_plans,
        derive_mae_plans,
        fits_plans_network,
        num_input_channels,
    )

    in_channels = num_input_channels(request.folder)
    checkpoint, configuration = request.checkpoint, request.configuration
    if request.checkpoint_network and not fits_plans_network(request.plans, in_channels, checkpoint, configuration):
        return derive_checkpoint_network_plans(
            request.plans, request.target_plans, request.reference, checkpoint, configuration
        )
    check_checkpoint_fits(request.plans, request.source_plans, in_channels, checkpoint, configuration)
    return derive_mae_plans(request.plans, request.target_plans, request.reference, configuration)


PLANNING: dict[str, FamilyPlanning] = {
    "swin": FamilyPlanning(
        "nnUNetVisMAEPlans",
        "VisMAETrainer",
        needs_checkpoint=False,
        derive=_derive_swin,
        spatial_dims=(2,),
        unplanned_dims="a 3D Swin (3D windows) is the swin3d encoder family: plan 3D without --pretrained or with a "
        "swin3d checkpoint",
    ),
    "swin3d": FamilyPlanning(
        "nnUNetVisMAEPlans",
        "VisMAETrainer",
        needs_checkpoint=False,
        derive=_derive_swin3d,
        spatial_dims=(3,),
        unplanned_dims="a 2D Swin (2D windows) is the swin encoder family: plan 2d without --pretrained or with a "
        "swin checkpoint",
    ),
    "cnn": FamilyPlanning(
        "nnUNetMAEPlans", "nnUNetTrainerMAE", needs_checkpoint=True, derive=_derive_cnn, spatial_dims=(2, 3)
    ),
}
NNUNET_NETWORK_FAMILY = "cnn"  # the family whose network is nnU-Net's own, in 2D and 3D
# what nnUNetv2_vismae_plan plans without --pretrained, by the configuration's dimensions: VisMAE from scratch
FAMILY_WITHOUT_CHECKPOINT = {2: "swin", 3: "swin3d"}


def check_plans_dims(family: str, dims: int, configuration: str) -> None:
    """PlanningError (one sentence) when the family plans no configuration of ``dims`` dimensions."""
    planning = planning_of(family)
    if dims not in planning.spatial_dims:
        raise PlanningError(
            f"The {family} encoder family plans only {' and '.join(f'{d}D' for d in planning.spatial_dims)} "
            f"configurations, not {configuration} ({dims}D): {planning.unplanned_dims}."
        )


def planning_of(family) -> FamilyPlanning:
    """The family's planning; PlanningError (one sentence) for a family planning does not know."""
    if not (isinstance(family, str) and family in PLANNING):
        raise PlanningError(f"Encoder family {family!r} has no fine-tuning plans; planned are {sorted(PLANNING)}.")
    return PLANNING[family]
