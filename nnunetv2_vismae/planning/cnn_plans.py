"""Plans for fine-tuning a pretrained cnn-family encoder (``nnUNetMAEPlans``, trained by ``nnUNetTrainerMAE``): the
checkpoint reference added to one configuration (2d or 3d_fullres) whose network is nnU-Net's own, unchanged, or,
with ``--checkpoint-network``, the checkpoint's network (e.g. a converted nnssl ResEnc-L) planned on that
configuration's data."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D
from nnunetv2_vismae.planning.errors import PlanningError


def num_input_channels(folder: Path) -> int:
    dataset = json.loads((folder / "dataset.json").read_text())
    return len(dataset.get("channel_names") or dataset.get("modality") or {"0": ""})


def resolved_configuration(plans: dict, configuration: str) -> dict:
    """The configuration with what it inherits (``inherits_from``) filled in, as nnU-Net resolves it."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    resolved = copy.deepcopy(PlansManager(plans).get_configuration(configuration).configuration)
    resolved.pop("inherits_from", None)
    return resolved


def fits_plans_network(plans: dict, in_channels: int, checkpoint, configuration: str) -> bool:
    """Whether the checkpoint's encoder is the one these plans build for ``configuration``."""
    from nnunetv2_vismae.checkpoint.cnn_encoder import cnn_encoder_config, signature_differences

    try:
        network = cnn_encoder_config(resolved_configuration(plans, configuration)["architecture"], in_channels)
    except Exception:  # a network the cnn family does not build is not the checkpoint's
        return False
    return not signature_differences(checkpoint.encoder_config, network)


def check_checkpoint_fits(
    plans: dict, plans_name: str, in_channels: int, checkpoint, configuration: str = CONFIGURATION_2D
) -> None:
    """PlanningError (one sentence) when the checkpoint's encoder is not the one these plans build for
    ``configuration``. A different number of input channels is fine: loading adapts the first convolution."""
    from nnunetv2_vismae.checkpoint.cnn_encoder import cnn_encoder_config, signature_differences

    try:
        network = cnn_encoder_config(resolved_configuration(plans, configuration)["architecture"], in_channels)
    except Exception as e:  # a network class the cnn family does not know
        raise PlanningError(
            f"The {configuration} network of plans {plans_name} ({type(e).__name__}: {e}) is not one the cnn "
            "encoder family can fine-tune."
        ) from None
    differences = signature_differences(checkpoint.encoder_config, network)
    if differences:
        key = differences[0]
        raise PlanningError(
            f"Encoder checkpoint {checkpoint.path} was pretrained for a different network than the {configuration} "
            f"configuration of plans {plans_name}: its {key} is {json.dumps(checkpoint.encoder_config.get(key))} but "
            f"the plans' is {json.dumps(network.get(key))}; pretrain with --encoder cnn "
            f"-d {plans.get('dataset_name', 'ID')} -p {plans_name} -c {configuration}, plan with the -p it was "
            "pretrained with, or add --checkpoint-network to plan its own network on this configuration's data."
        )


def derive_mae_plans(plans: dict, plans_name: str, reference: dict, configuration: str = CONFIGURATION_2D) -> dict:
    """A copy of ``plans`` with only ``configuration`` (resolved), architecture untouched, and the
    checkpoint reference under the key the VisMAE trainers read."""
    config = resolved_configuration(plans, configuration)
    config[PRETRAINED_KEY] = reference
    derived = copy.deepcopy(plans)
    derived["plans_name"] = plans_name
    derived["configurations"] = {configuration: config}
    return derived


# nnU-Net master's PretrainedTrainer trains pretrained 3D networks at batch 2: the plans' batch size was sized for
# their own network, and the checkpoint's may need much more memory per sample
CHECKPOINT_NETWORK_BATCH_SIZE = 2


def total_strides(architecture: dict, dims: int) -> list[int]:
    """Per axis, the product of the network's stage strides: a patch must be a multiple of it, or the decoder's
    upsampled maps miss their skips' shapes."""
    totals = [1] * dims
    for stride in architecture["arch_kwargs"]["strides"]:
        per_axis = [stride] * dims if isinstance(stride, int) else stride
        totals = [t * s for t, s in zip(totals, per_axis)]
    return totals


def fitted_patch_size(patch_size, strides) -> list[int]:
    """The patch rounded up, per axis, to a multiple of the total stride (up: nnU-Net pads crops to the patch,
    while rounding down could leave no voxel of context on a short axis)."""
    return [math.ceil(p / s) * s for p, s in zip(patch_size, strides)]


def derive_checkpoint_network_plans(
    plans: dict, plans_name: str, reference: dict, checkpoint, configuration: str
) -> dict:
    """``derive_mae_plans`` with the checkpoint's network in place of the plans' (its stages, kernels, strides and
    features, so encoder and stem load strictly; it was built when the checkpoint was read, and loading adapts
    the input channels). The data side stays as nnU-Net master's nnUNetv2_plan_like_dynamic keeps it: the
    configuration's spacing, normalization and preprocessed data (data_identifier); its patch size is rounded up
    to the network's total stride; the batch size is master's 2."""
    architecture = copy.deepcopy(checkpoint.encoder_config["architecture"])
    derived = derive_mae_plans(plans, plans_name, reference, configuration)
    config = derived["configurations"][configuration]
    strides = total_strides(architecture, len(config["patch_size"]))
    config["architecture"] = architecture
    config["patch_size"] = fitted_patch_size(config["patch_size"], strides)
    config["batch_size"] = CHECKPOINT_NETWORK_BATCH_SIZE
    return derived
