"""Derive a VisMAE plans file from a dataset's nnU-Net plans (SwinUNet on 2d, Swin3dUNet on 3d_fullres; same
preprocessed data)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from nnunetv2_vismae.architectures import Swin3dEncoderConfig, Swin3dUNet, SwinEncoderConfig, SwinUNet
from nnunetv2_vismae.architectures.decoders import STEM_CHANNELS
from nnunetv2_vismae.architectures.swin_unet import DECODERS
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D
from nnunetv2_vismae.planning.errors import PlanningError

NETWORK_CLASS = "nnunetv2_vismae.architectures.SwinUNet"
NETWORK_CLASS_3D = "nnunetv2_vismae.architectures.Swin3dUNet"
NETWORK_CLASSES = (NETWORK_CLASS, NETWORK_CLASS_3D)  # the networks VisMAE plans name


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


def compatible_patch_size(patch_size, multiple) -> list[int]:
    """Each axis rounded to the nearest multiple of the encoder's total stride on it (at least one); ``multiple``
    is one stride for every axis or one per axis."""
    multiples = [multiple] * len(patch_size) if isinstance(multiple, int) else list(multiple)
    return [max(m, round(s / m) * m) for s, m in zip(patch_size, multiples)]


def scaled_batch_size(batch_size: int, old_patch, new_patch) -> int:
    """nnU-Net's batch size, scaled by the change in patch area (volume in 3D; at least 2, at most doubled)."""
    ratio = math.prod(old_patch) / math.prod(new_patch)
    return int(min(2 * batch_size, max(2, round(batch_size * ratio))))


def swin_architecture(encoder: SwinEncoderConfig, decoder: str) -> dict:
    """The architecture block of SwinUNet with ``encoder`` and ``decoder`` (2D)."""
    if decoder not in DECODERS:
        raise PlanningError(f"--decoder must be one of {DECODERS}, got {decoder!r}.")
    return network_block(
        NETWORK_CLASS,
        encoder.to_json(),
        decoder=decoder,
        stem_channels=STEM_CHANNELS,
        strides=SwinUNet.output_strides(encoder, decoder),
    )


def swin3d_architecture(encoder: Swin3dEncoderConfig) -> dict:
    """The architecture block of Swin3dUNet with ``encoder`` (its one decoder, the conv decoder in 3D)."""
    strides = Swin3dUNet.output_strides(encoder)
    return network_block(NETWORK_CLASS_3D, encoder.to_json(), stem_channels=STEM_CHANNELS, strides=strides)


def network_block(network_class: str, encoder: dict, **kwargs) -> dict:
    """An architecture block in nnU-Net's form naming one of our networks (nothing to import by name); the
    encoder's input channels are left to nnU-Net, which passes the dataset's."""
    encoder_kwargs = {k: v for k, v in encoder.items() if k != "in_channels"}
    return {
        "network_class_name": network_class,
        "arch_kwargs": {"encoder": encoder_kwargs, **kwargs},
        "_kw_requires_import": [],
    }


def derive_swin_plans(
    plans: dict, plans_name: str, configuration: str, architecture: dict, total_stride, pretrained: dict | None = None
) -> dict:
    """A copy of ``plans`` with one configuration, ``configuration``, that trains the network of ``architecture``
    on the same data: its patch rounded to the encoder's ``total_stride``, the batch size scaled to match."""
    source = plans["configurations"][configuration]
    config = copy.deepcopy(source)
    config.pop("inherits_from", None)
    config["patch_size"] = compatible_patch_size(source["patch_size"], total_stride)
    config["batch_size"] = scaled_batch_size(source["batch_size"], source["patch_size"], config["patch_size"])
    config["architecture"] = architecture
    if pretrained is not None:
        config[PRETRAINED_KEY] = pretrained
    derived = copy.deepcopy(plans)
    derived["plans_name"] = plans_name
    derived["configurations"] = {configuration: config}
    return derived


def derive_vismae_plans(
    plans: dict, plans_name: str, encoder: SwinEncoderConfig, decoder: str, pretrained: dict | None = None
) -> dict:
    """A copy of ``plans`` with one 2d configuration that trains SwinUNet on the same data."""
    architecture = swin_architecture(encoder, decoder)
    return derive_swin_plans(plans, plans_name, CONFIGURATION_2D, architecture, encoder.total_stride, pretrained)


def derive_vismae3d_plans(
    plans: dict, plans_name: str, encoder: Swin3dEncoderConfig, pretrained: dict | None = None
) -> dict:
    """A copy of ``plans`` with one 3d_fullres configuration that trains Swin3dUNet on the same data."""
    architecture = swin3d_architecture(encoder)
    return derive_swin_plans(plans, plans_name, CONFIGURATION_3D, architecture, encoder.total_stride, pretrained)
