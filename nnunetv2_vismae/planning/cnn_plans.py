"""Plans for fine-tuning a pretrained cnn-family encoder: nnU-Net's own network of one configuration (2d or
3d_fullres), unchanged, plus the checkpoint reference (``nnUNetMAEPlans``, trained by ``nnUNetTrainerMAE``)."""

from __future__ import annotations

import copy
import json
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
            f"-d {plans.get('dataset_name', 'ID')} -p {plans_name} -c {configuration}, or plan with the -p it was "
            "pretrained with."
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
