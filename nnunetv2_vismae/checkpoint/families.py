"""Encoder families known to the checkpoint format.

A family is one table entry (``EncoderFamily``): the schema of its config (types and bounds of every
entry, checked before anything is built from it, see ``schema.py``), how to tell whether a module
belongs to it, which config entries must agree for weights to move between two encoders,
and which tensor adapters may reconcile shapes that legitimately differ (window size, patch size).
Families are ``swin`` (VIS-MAE's Swin encoder), ``swin3d`` (a 3D Swin in SwinUNETR's layout) and
``cnn`` (nnU-Net's own encoder, see ``cnn_encoder``), each added with ``register_family``; nothing else
in the package branches on the family name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from nnunetv2_vismae.architectures.swin3d_encoder import MERGE_OFFSETS

from . import cnn_encoder
from .adapt import TensorAdapter, patch_size_adapter, relative_position_table_adapter
from .errors import CheckpointError
from .schema import Rule, boolean, entry_problems, integer, list_of, number, one_of


class ConfigProblems(ValueError):
    """An encoder config breaks its family's schema; ``problems`` holds one sentence per violation."""

    def __init__(self, problems: list[str]):
        super().__init__(" ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class EncoderFamily:
    """How the checkpoint format handles one kind of encoder.

    name:               value of the ``family`` metadata entry.
    required_config_keys: entries every config of the family has (``validated_config`` checks them).
    config_rules:       the type and bounds of each config entry; an entry without a rule is refused.
    config_problems:    config whose entries pass their rules -> problems across entries (one
                        sentence each), e.g. heads that do not divide a stage's width.
    normalize_config:   config dict that passed the checks above -> canonical config dict.
    module_config:      encoder module -> its config dict, or None when the module is not of this
                        family.
    fixed_config_keys:  config entries that must be equal in checkpoint and network (they change
                        the tensor set or shapes in ways no adapter can bridge).
    adapters:           family-specific tensor adapters, tried in order on a shape mismatch.
    spatial_dims:       checked config dict -> the number of spatial dimensions of the encoder it
                        describes, which the checkpoint's ``spatial_dims`` entry must equal.
    expected_shapes:    optional config dict -> {tensor name: shape} of the encoder's state dict;
                        when given, checkpoints are checked against it on save and read.
    """

    name: str
    required_config_keys: tuple[str, ...]
    config_rules: dict[str, Rule]
    config_problems: Callable[[dict], list[str]]
    normalize_config: Callable[[dict], dict]
    module_config: Callable[[nn.Module], Optional[dict]]
    fixed_config_keys: tuple[str, ...]
    spatial_dims: Callable[[dict], int]
    adapters: tuple[TensorAdapter, ...] = ()
    expected_shapes: Optional[Callable[[dict], dict[str, tuple[int, ...]]]] = field(default=None)

    def validated_config(self, config) -> dict:
        """``normalize_config`` of a decoded JSON config that passes the family's schema;
        ConfigProblems (one sentence per violation) otherwise. Builds nothing."""
        problems = entry_problems(config, "encoder_config", self.config_rules, self.required_config_keys)
        problems = problems or self.config_problems(config)
        if problems:
            raise ConfigProblems(problems)
        return self.normalize_config(config)


# ---------------------------------------------------------------------------------------- swin
_SWIN_REQUIRED_KEYS = ("in_channels", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio")
MAX_STAGES = 8
# generous bounds (Swin-L: embed 192, depths (2, 2, 18, 2), heads up to 48, window 12) that keep a
# crafted config from building millions of modules or tensors
_SWIN_RULES = {
    "in_channels": integer(1, 64),
    "patch_size": integer(1, 64),
    "embed_dim": integer(1, 4096),
    "depths": list_of(integer(1, 64), 1, MAX_STAGES),
    "num_heads": list_of(integer(1, 4096), 1, MAX_STAGES),
    "window_size": integer(1, 64),
    "mlp_ratio": number(0, 16, low_open=True),
    "drop_path_rate": number(0, 1, high_open=True),
    "shift_single_window_stages": boolean(),
    "final_norm": boolean(),
}


def _swin_config_problems(config: dict) -> list[str]:
    depths, heads = config["depths"], config["num_heads"]
    if len(heads) != len(depths):
        return [f"encoder_config.num_heads is {heads}, expected one head count per stage of depths {depths}."]
    widths = [config["embed_dim"] * 2**i for i in range(len(depths))]
    return [
        f"encoder_config.num_heads[{i}] is {h}, expected a divisor of stage {i}'s width {w} "
        f"(embed_dim {config['embed_dim']} doubled per stage)."
        for i, (h, w) in enumerate(zip(heads, widths))
        if w % h
    ]


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
    config_rules=_SWIN_RULES,
    config_problems=_swin_config_problems,
    normalize_config=_swin_normalize_config,
    module_config=_swin_module_config,
    # the shift rule changes the function, not the tensors: weights compute what they were
    # trained to only under their own rule; the final norm changes both
    fixed_config_keys=("embed_dim", "depths", "num_heads", "mlp_ratio", "shift_single_window_stages", "final_norm"),
    spatial_dims=lambda config: 2,  # a 3D Swin (3D windows) is another architecture, hence another family
    adapters=(patch_size_adapter("patch_embed.proj.weight"), relative_position_table_adapter),
    expected_shapes=_swin_expected_shapes,
)

FAMILIES: dict[str, EncoderFamily] = {}


def register_family(family: EncoderFamily) -> None:
    """Make a family known to save, read and load (replaces an entry of the same name)."""
    FAMILIES[family.name] = family


register_family(SWIN)


# -------------------------------------------------------------------------------------- swin3d
# the 3D Swin encoder (SwinUNETR's layout, architectures/swin3d_encoder.py): 3D windows, MONAI's names
_SWIN3D_RULES = {
    "in_channels": integer(1, 64),
    "patch_size": list_of(integer(1, 64), 3, 3),
    "embed_dim": integer(1, 4096),
    "depths": list_of(integer(1, 64), 1, MAX_STAGES),
    "num_heads": list_of(integer(1, 4096), 1, MAX_STAGES),
    "window_size": list_of(integer(1, 32), 3, 3),
    "mlp_ratio": number(0, 16, low_open=True),
    "drop_path_rate": number(0, 1, high_open=True),
    "normalize_outputs": boolean(),
    "merge_offsets": one_of(MERGE_OFFSETS),
}


def _swin3d_normalize_config(config: dict) -> dict:
    from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoderConfig

    return Swin3dEncoderConfig.from_json(config).to_json()


def _swin3d_module_config(module: nn.Module) -> Optional[dict]:
    from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoder

    return module.config.to_json() if isinstance(module, Swin3dEncoder) else None


def _swin3d_expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoder, Swin3dEncoderConfig

    with torch.device("meta"):
        encoder = Swin3dEncoder(Swin3dEncoderConfig.from_json(config))
    return {k: tuple(v.shape) for k, v in encoder.state_dict().items()}


SWIN3D = EncoderFamily(
    name="swin3d",
    required_config_keys=_SWIN_REQUIRED_KEYS,
    config_rules=_SWIN3D_RULES,
    config_problems=_swin_config_problems,  # heads per stage dividing its width: a 3D stage i is embed_dim x 2^i
    normalize_config=_swin3d_normalize_config,
    module_config=_swin3d_module_config,
    # window and merge order change the function (the bias table's rows, which voxel feeds which weight),
    # normalized outputs what the decoder was trained on; no adapter bridges them
    fixed_config_keys=(
        "patch_size",
        "embed_dim",
        "depths",
        "num_heads",
        "window_size",
        "mlp_ratio",
        "normalize_outputs",
        "merge_offsets",
    ),
    spatial_dims=lambda config: 3,
    expected_shapes=_swin3d_expected_shapes,
)
register_family(SWIN3D)


# ----------------------------------------------------------------------------------------- cnn
# nnU-Net's own encoder built from plans (see cnn_encoder): no adapters beyond input channels.
CNN = EncoderFamily(
    name="cnn",
    required_config_keys=cnn_encoder.REQUIRED_KEYS,
    config_rules=cnn_encoder.CONFIG_RULES,
    config_problems=cnn_encoder.config_problems,
    normalize_config=cnn_encoder.normalize_config,
    module_config=cnn_encoder.module_config,
    fixed_config_keys=cnn_encoder.SIGNATURE_KEYS,
    spatial_dims=cnn_encoder.spatial_dims,
    expected_shapes=cnn_encoder.expected_shapes,
)
register_family(CNN)


def get_family(name, where: str = "") -> EncoderFamily:
    """The family called ``name``; CheckpointError naming ``where`` when unknown."""
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise CheckpointError(
            f"{where or 'The checkpoint'} names encoder family {name!r}, expected one of {sorted(FAMILIES)}."
        )
    return family


def family_of_module(module: nn.Module) -> tuple[Optional[EncoderFamily], Optional[dict]]:
    """(family, config) of an encoder module, or (None, None) when no family claims it."""
    for family in FAMILIES.values():
        config = family.module_config(module)
        if config is not None:
            return family, config
    return None, None
