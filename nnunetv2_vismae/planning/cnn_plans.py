"""Plans for fine-tuning a pretrained cnn-family encoder: nnU-Net's own 2d network, unchanged, plus the
checkpoint reference (``nnUNetMAEPlans``, trained by ``nnUNetTrainerMAE``)."""

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


def _network_config(plans: dict, in_channels: int) -> dict:
    from nnunetv2_vismae.checkpoint.cnn_encoder import cnn_encoder_config

    return cnn_encoder_config(plans["configurations"][CONFIGURATION_2D]["architecture"], in_channels)


def check_checkpoint_fits(plans: dict, plans_name: str, in_channels: int, checkpoint) -> None:
    """PlanningError (one sentence) when the checkpoint's encoder is not the one these plans build.
    A different number of input channels is fine: loading adapts the first convolution."""
    from nnunetv2_vismae.checkpoint.cnn_encoder import signature_differences

    try:
        network = _network_config(plans, in_channels)
    except Exception as e:  # a network class the cnn family does not know
        raise PlanningError(
            f"The 2d network of plans {plans_name} ({type(e).__name__}: {e}) is not one the cnn "
            "encoder family can fine-tune."
        ) from None
    differences = signature_differences(checkpoint.encoder_config, network)
    if differences:
        key = differences[0]
        raise PlanningError(
            f"Encoder checkpoint {checkpoint.path} was pretrained for a different network than the 2d configuration "
            f"of plans {plans_name}: its {key} is {json.dumps(checkpoint.encoder_config.get(key))} but the plans' is "
            f"{json.dumps(network.get(key))}; pretrain with --encoder cnn -d {plans.get('dataset_name', 'ID')} "
            f"-p {plans_name}, or plan with the -p it was pretrained with."
        )


def derive_mae_plans(plans: dict, plans_name: str, reference: dict) -> dict:
    """A copy of ``plans`` with only its 2d configuration, architecture untouched, and the
    checkpoint reference under the key the VisMAE trainers read."""
    config = copy.deepcopy(plans["configurations"][CONFIGURATION_2D])
    config.pop("inherits_from", None)
    config[PRETRAINED_KEY] = reference
    derived = copy.deepcopy(plans)
    derived["plans_name"] = plans_name
    derived["configurations"] = {CONFIGURATION_2D: config}
    return derived
