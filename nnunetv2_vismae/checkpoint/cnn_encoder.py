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

from .network_classes import architecture_problems, cnn_network_classes, resolved_kwargs
from .schema import Rule, entry_problems, integer, json_object, list_of, one_of, optional, text

# Signature entries that decide the tensor set and shapes (in-channels are adapted instead).
SIGNATURE_KEYS = (
    "encoder_class",
    "conv_op",
    "norm_op",
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "convs_per_stage",
)
REQUIRED_KEYS = (
    "architecture",
    "in_channels",
    "key_to_encoder",
    "key_to_stem",
    "keys_to_in_proj",
    "load_root",
    *SIGNATURE_KEYS,
)

_SIZES = Rule("a list of per-stage sizes", lambda v: isinstance(v, list))
# the encoder's conv op -> its number of spatial dimensions (a cnn encoder is 2D or 3D by its plans)
CONV_OP_DIMS = {"Conv2d": 2, "Conv3d": 3}
CONFIG_RULES = {
    "architecture": json_object(),
    "in_channels": integer(1, 64),
    "key_to_encoder": text(),
    "key_to_stem": text(),
    "keys_to_in_proj": list_of(text(), 0, 16),
    "load_root": text(),
    "encoder_class": text(),
    "conv_op": one_of(CONV_OP_DIMS),
    "norm_op": optional(text()),
    "features_per_stage": list_of(integer(1, 4096), 1, 16),
    "kernel_sizes": _SIZES,
    "strides": _SIZES,
    "convs_per_stage": list_of(integer(0, 1024), 1, 16),
}


# what the architecture block builds, bounded like the swin config: a crafted block must not make
# dynamic-network-architectures build millions of modules (its classes: network_classes)
def _per_stage(high: int) -> Rule:
    """One integer for every stage, or one per stage (dynamic-network-architectures takes both)."""
    one, per_stage = integer(1, high), list_of(integer(1, high), 1, 16)
    return Rule(f"{one.expected}, or a list of 1 to 16 of them", lambda v: one.accepts(v) or per_stage.accepts(v))


_ARCH_KWARGS_RULES = {
    "n_stages": integer(1, 16),
    "features_per_stage": _per_stage(4096),
    "n_conv_per_stage": _per_stage(64),
    "n_blocks_per_stage": _per_stage(64),
    "n_conv_per_stage_decoder": _per_stage(64),
}


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
    return {
        "encoder_class": type(encoder).__name__,
        "conv_op": conv_op.__name__,
        "norm_op": encoder.norm_op.__name__ if encoder.norm_op else None,
        "features_per_stage": _as_lists(encoder.output_channels),
        "kernel_sizes": _as_lists(encoder.kernel_sizes),
        "strides": _as_lists(encoder.strides),
        "convs_per_stage": [sum(isinstance(m, conv_op) for m in s.modules()) for s in encoder.stages],
        "in_channels": first_conv.in_channels,
    }


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
        raise ValueError(
            f"{type(network).__name__} has no dynamic-network-architectures encoder module holding its encoder and stem"
        )
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


def build_stock_network(
    architecture: dict, in_channels: int, num_classes: int = 2, deep_supervision: bool = False, initialize: bool = True
) -> nn.Module:
    """nnU-Net's network exactly as ``nnUNetTrainer.build_network_architecture`` builds it from plans,
    once the block names only listed classes (ValueError otherwise): nnU-Net imports nothing it names."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    problems = architecture_problems(architecture, "architecture", cnn_network_classes())
    if problems:
        raise ValueError(" ".join(problems))
    return get_network_from_plans(
        architecture["network_class_name"],
        resolved_kwargs(architecture),
        [],
        in_channels,
        num_classes,
        allow_init=initialize,
        deep_supervision=deep_supervision,
    )


def cnn_encoder_config(architecture: dict, in_channels: int) -> dict:
    """The checkpoint's ``encoder_config`` for the network the plans' ``architecture`` block builds."""
    with torch.device("meta"):
        network = build_stock_network(architecture, in_channels, initialize=False)
    root = load_root(network)
    return {
        "architecture": copy.deepcopy(architecture),
        "key_to_encoder": network.key_to_encoder,
        "key_to_stem": network.key_to_stem,
        "keys_to_in_proj": list(network.keys_to_in_proj),
        "load_root": root,
        **encoder_signature(network.get_submodule(root)),
    }


def config_problems(config: dict) -> list[str]:
    """Problems of the ``architecture`` block (a config whose entries passed ``CONFIG_RULES``):
    its class, the bounded entries of its kwargs, and what nnU-Net would import for it."""
    where = "encoder_config.architecture"
    architecture = config["architecture"]
    problems = architecture_problems(architecture, where, cnn_network_classes())
    kwargs = architecture.get("arch_kwargs")
    if isinstance(kwargs, dict):
        bounded = {k: v for k, v in kwargs.items() if k in _ARCH_KWARGS_RULES}
        problems = entry_problems(bounded, f"{where}.arch_kwargs", _ARCH_KWARGS_RULES) + problems
    return problems


def normalize_config(config: dict) -> dict:
    """The canonical form of a config that passed ``CONFIG_RULES`` and ``config_problems``."""
    return _as_lists(dict(config))


def module_config(module: nn.Module) -> dict | None:
    return encoder_signature(module)


def conv_op_dims(conv_op) -> int | None:
    """2 for Conv2d, 3 for Conv3d, by name or class path (plans write ``torch.nn.modules.conv.Conv3d``);
    None for anything else."""
    return CONV_OP_DIMS.get(str(conv_op).rsplit(".", 1)[-1])


def spatial_dims(config: dict) -> int:
    """2 or 3: the spatial dimensions of the encoder a checked config describes, by its conv op."""
    return CONV_OP_DIMS[config["conv_op"]]


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the encoder a checked config builds; ValueError (one sentence) when the network
    builder refuses the config (its lists disagree, an op gets kwargs it has not, ...)."""
    try:
        with torch.device("meta"):  # shapes only
            network = build_stock_network(config["architecture"], config["in_channels"], initialize=False)
        encoder = network.get_submodule(config["load_root"])
    except (AssertionError, AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        reason = " ".join(str(e).split())
        raise ValueError(
            f"encoder_config.architecture does not build the encoder ({type(e).__name__}: {reason})."
        ) from None
    return {k: tuple(v.shape) for k, v in encoder.state_dict().items()}


def signature_differences(checkpoint_config: dict, network_config: dict) -> list[str]:
    """Signature entries in which two cnn configs differ (empty: the weights fit)."""
    return [k for k in SIGNATURE_KEYS if _as_lists(checkpoint_config.get(k)) != _as_lists(network_config.get(k))]
