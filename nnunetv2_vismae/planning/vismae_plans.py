"""Derive a VisMAE plans file from a dataset's nnU-Net plans (2d configuration, same preprocessed data)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from nnunetv2_vismae.architectures import SwinEncoderConfig, SwinUNet
from nnunetv2_vismae.architectures.decoders import STEM_CHANNELS
from nnunetv2_vismae.architectures.swin_unet import DECODERS
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D
from nnunetv2_vismae.planning.errors import PlanningError

NETWORK_CLASS = "nnunetv2_vismae.architectures.SwinUNet"


def load_plans(folder: Path, plans_name: str, configuration: str = CONFIGURATION_2D) -> dict:
    """nnU-Net's plans ``plans_name`` of the dataset, which must hold ``configuration``."""
    path = folder / f"{plans_name}.json"
    if not path.is_file():
        raise PlanningError(
            f"{path} does not exist; run nnUNetv2_plan_and_preprocess "
            f"(with -pl for other planners) to create plans {plans_name!r}."
        )
    plans = json.loads(path.read_text())
    if configuration not in plans.get("configurations", {}):
        raise PlanningError(
            f"{path} has no '{configuration}' configuration (it has "
            f"{sorted(plans.get('configurations', {}))}); run nnUNetv2_plan_and_preprocess -c {configuration}."
        )
    return plans


def compatible_patch_size(patch_size, multiple: int) -> list[int]:
    """Each axis rounded to the nearest multiple of the encoder's total stride (at least one)."""
    return [max(multiple, round(s / multiple) * multiple) for s in patch_size]


def scaled_batch_size(batch_size: int, old_patch, new_patch) -> int:
    """nnU-Net's batch size, scaled by the change in patch area (at least 2, at most doubled)."""
    ratio = (old_patch[0] * old_patch[1]) / (new_patch[0] * new_patch[1])
    return int(min(2 * batch_size, max(2, round(batch_size * ratio))))


def derive_vismae_plans(
    plans: dict, plans_name: str, encoder: SwinEncoderConfig, decoder: str, pretrained: dict | None = None
) -> dict:
    """A copy of ``plans`` with one 2d configuration that trains SwinUNet on the same data."""
    if decoder not in DECODERS:
        raise PlanningError(f"--decoder must be one of {DECODERS}, got {decoder!r}.")
    source = plans["configurations"][CONFIGURATION_2D]
    config = copy.deepcopy(source)
    config.pop("inherits_from", None)
    config["patch_size"] = compatible_patch_size(source["patch_size"], encoder.total_stride)
    config["batch_size"] = scaled_batch_size(source["batch_size"], source["patch_size"], config["patch_size"])
    encoder_kwargs = {k: v for k, v in encoder.to_json().items() if k != "in_channels"}
    config["architecture"] = {
        "network_class_name": NETWORK_CLASS,
        "arch_kwargs": {
            "encoder": encoder_kwargs,
            "decoder": decoder,
            "stem_channels": STEM_CHANNELS,
            "strides": SwinUNet.output_strides(encoder, decoder),
        },
        "_kw_requires_import": [],
    }
    if pretrained is not None:
        config[PRETRAINED_KEY] = pretrained
    derived = copy.deepcopy(plans)
    derived["plans_name"] = plans_name
    derived["configurations"] = {CONFIGURATION_2D: config}
    return derived
