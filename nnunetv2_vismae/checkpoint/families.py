"""Encoder families known to the checkpoint format.

A family is one table entry (``EncoderFamily``): how to validate its config, how to tell whether a
module belongs to it, which config entries must agree for weights to move between two encoders,
and which tensor adapters may reconcile shapes that legitimately differ (window size, patch size).
Families are ``swin`` (VIS-MAE's Swin encoder) and ``cnn`` (nnU-Net's own encoder, see
``cnn_encoder``), each added with ``register_family``; nothing else in the package branches on the
family name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from . import cnn_encoder
from .adapt import TensorAdapter, patch_size_adapter, relative_position_table_adapter
from .errors import CheckpointError


@dataclass(frozen=True)
class EncoderFamily:
    """How the checkpoint format handles one kind of encoder.

    name:               value of the ``family`` metadata entry.
    required_config_keys: entries every config of the family has (``validated_config`` checks them).
    normalize_config:   config dict with those entries -> canonical config dict; raises ValueError
                        or TypeError with the reason when the config is not valid for the family.
    module_config:      encoder module -> its config dict, or None when the module is not of this
                        family.
    fixed_config_keys:  config entries that must be equal in checkpoint and network (they change
                        the tensor set or shapes in ways no adapter can bridge).
    adapters:           family-specific tensor adapters, tried in order on a shape mismatch.
    expected_shapes:    optional config dict -> {tensor name: shape} of the encoder's state dict;
                        when given, checkpoints are checked against it on save and read.
    """

    name: str
    required_config_keys: tuple[str, ...]
    normalize_config: Callable[[dict], dict]
    module_config: Callable[[nn.Module], Optional[dict]]
    fixed_config_keys: tuple[str, ...]
    adapters: tuple[TensorAdapter, ...] = ()
    expected_shapes: Optional[Callable[[dict], dict[str, tuple[int, ...]]]] = field(default=None)

    def validated_config(self, config) -> dict:
        """``normalize_config`` of a decoded JSON config; TypeError or ValueError with the reason."""
        if not isinstance(config, dict):
            raise TypeError(f"expected a JSON object, got {type(config).__name__}")
        missing = [k for k in self.required_config_keys if k not in config]
        if missing:
            raise ValueError(f"missing entries {missing}")
        return self.normalize_config(config)


# ---------------------------------------------------------------------------------------- swin
_SWIN_REQUIRED_KEYS = ("in_channels", "patch_size", "embed_dim", "depths", "num_heads", "window_size",
                       "mlp_ratio")


def _swin_normalize_config(config: dict) -> dict:
    from nnunetv2_vismae.architectures.swin_encoder import SwinEncoderConfig

    return SwinEncoderConfig.from_json(config).to_json()


def _swin_module_config(module: nn.Module) -> Optional[dict]:
    from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder

    return module.config.to_json() if isinstance(module, SwinEncoder) else None


def _swin_expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder, SwinEncoderConfig

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        encoder = SwinEncoder.from_config(SwinEncoderConfig.from_json(config))
    return {k: tuple(v.shape) for k, v in encoder.state_dict().items()}


SWIN = EncoderFamily(
    name="swin",
    required_config_keys=_SWIN_REQUIRED_KEYS,
    normalize_config=_swin_normalize_config,
    module_config=_swin_module_config,
    fixed_config_keys=("embed_dim", "depths", "num_heads", "mlp_ratio"),
    adapters=(patch_size_adapter("patch_embed.proj.weight"), relative_position_table_adapter),
    expected_shapes=_swin_expected_shapes,
)

FAMILIES: dict[str, EncoderFamily] = {}


def register_family(family: EncoderFamily) -> None:
    """Make a family known to save, read and load (replaces an entry of the same name)."""
    FAMILIES[family.name] = family


register_family(SWIN)


# ----------------------------------------------------------------------------------------- cnn
# nnU-Net's own encoder built from plans (see cnn_encoder): no adapters beyond input channels.
CNN = EncoderFamily(
    name="cnn",
    required_config_keys=cnn_encoder.REQUIRED_KEYS,
    normalize_config=cnn_encoder.normalize_config,
    module_config=cnn_encoder.module_config,
    fixed_config_keys=cnn_encoder.SIGNATURE_KEYS,
    expected_shapes=cnn_encoder.expected_shapes,
)
register_family(CNN)


def get_family(name, where: str = "") -> EncoderFamily:
    """The family called ``name``; CheckpointError naming ``where`` when unknown."""
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise CheckpointError(f"{where or 'The checkpoint'} names encoder family {name!r}, "
                              f"expected one of {sorted(FAMILIES)}.")
    return family


def family_of_module(module: nn.Module) -> tuple[Optional[EncoderFamily], Optional[dict]]:
    """(family, config) of an encoder module, or (None, None) when no family claims it."""
    for family in FAMILIES.values():
        config = family.module_config(module)
        if config is not None:
            return family, config
    return None, None
