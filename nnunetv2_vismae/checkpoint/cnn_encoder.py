"""The ``cnn`` family: the encoder of nnU-Net's own network, built from plans by dynamic-network-architectures.

The checkpoint holds the tensors of the network's encoder module (``PlainConvEncoder`` or
``ResidualEncoder``; for ResidualEncoderUNet the stem sits beside ``key_to_encoder`` inside it),
named relative to that module, which we call the *load root*. Its config records the plans'
architecture block, the input channels, DNA's key paths and a *signature* read off the built
encoder; the signature is what must match for the weights to move to another network.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

# Signature entries that decide the tensor set and shapes (in-channels are adapted instead).
SIGNATURE_KEYS = ("encoder_class", "conv_op", "norm_op", "features_per_stage", "kernel_sizes", "strides",
                  "convs_per_stage")
REQUIRED_KEYS = ("architecture", "in_channels", "key_to_encoder", "key_to_stem", "keys_to_in_proj", "load_root",
                 *SIGNATURE_KEYS)


def _dna_encoder_classes() -> tuple[type, ...]:
    from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
    from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder

    return PlainConvEncoder, ResidualEncoder


def _as_lists(value):
    """Tuples (and nested tuples) as lists, so configs compare equal after a JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    return value


def encoder_signature(encoder: nn.Module) -> dict | None:
    """The architecture-defining facts of a DNA encoder module, or None for any other module."""
    if not isinstance(encoder, _dna_encoder_classes()):
        return None
    conv_op = encoder.conv_op
    stem = getattr(encoder, "stem", None)
    first_conv = next(m for m in (stem or encoder.stages).modules() if isinstance(m, conv_op))
    return {"encoder_class": type(encoder).__name__, "conv_op": conv_op.__name__,
            "norm_op": encoder.norm_op.__name__ if encoder.norm_op else None,
            "features_per_stage": _as_lists(encoder.output_channels),
            "kernel_sizes": _as_lists(encoder.kernel_sizes), "strides": _as_lists(encoder.strides),
            "convs_per_stage": [sum(isinstance(m, conv_op) for m in s.modules()) for s in encoder.stages],
            "in_channels": first_conv.in_channels}


def load_root(network: nn.Module) -> str:
    """Path of the DNA encoder module that holds both ``key_to_encoder`` and ``key_to_stem``."""
    paths = [network.key_to_encoder.split("."), network.key_to_stem.split(".")]
    common = []
    for a, b in zip(*paths):
        if a != b:
            break
        common.append(a)
    while common and not isinstance(network.get_submodule(".".join(common)), _dna_encoder_classes()):
        common.pop()
    if not common:
        raise ValueError(f"{type(network).__name__} has no dynamic-network-architectures encoder module "
                         "holding its encoder and stem")
    return ".".join(common)


@contextlib.contextmanager
def encoder_and_stem_as_encoder(network: nn.Module):
    """While loading, ``key_to_encoder`` names the load root, so the stem travels with the encoder
    (ResidualEncoderUNet keeps its stem outside ``encoder.stages``)."""
    original = network.key_to_encoder
    network.key_to_encoder = load_root(network)
    try:
        yield network
    finally:
        network.key_to_encoder = original


def build_stock_network(architecture: dict, in_channels: int, num_classes: int = 2,
                        deep_supervision: bool = False, initialize: bool = True) -> nn.Module:
    """nnU-Net's network exactly as ``nnUNetTrainer.build_network_architecture`` builds it from plans."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture["_kw_requires_import"], in_channels, num_classes,
                                  allow_init=initialize, deep_supervision=deep_supervision)


def cnn_encoder_config(architecture: dict, in_channels: int) -> dict:
    """The checkpoint's ``encoder_config`` for the network the plans' ``architecture`` block builds."""
    with torch.device("meta"):
        network = build_stock_network(architecture, in_channels, initialize=False)
    root = load_root(network)
    return {"architecture": copy.deepcopy(architecture), "key_to_encoder": network.key_to_encoder,
            "key_to_stem": network.key_to_stem, "keys_to_in_proj": list(network.keys_to_in_proj),
            "load_root": root, **encoder_signature(network.get_submodule(root))}


def normalize_config(config: dict) -> dict:
    """The canonical form of a config holding every ``REQUIRED_KEYS`` entry."""
    if not isinstance(config["in_channels"], int) or config["in_channels"] < 1:
        raise ValueError(f"in_channels must be a positive integer, got {config['in_channels']!r}")
    return _as_lists(dict(config))


def module_config(module: nn.Module) -> dict | None:
    return encoder_signature(module)


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only
        network = build_stock_network(config["architecture"], config["in_channels"], initialize=False)
    return {k: tuple(v.shape) for k, v in network.get_submodule(config["load_root"]).state_dict().items()}


def signature_differences(checkpoint_config: dict, network_config: dict) -> list[str]:
    """Signature entries in which two cnn configs differ (empty: the weights fit)."""
    return [k for k in SIGNATURE_KEYS if _as_lists(checkpoint_config.get(k)) != _as_lists(network_config.get(k))]
