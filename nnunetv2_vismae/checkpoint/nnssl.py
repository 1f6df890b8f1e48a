"""nnssl checkpoints (MIC-DKFZ/nnssl; the public OpenMind weights) -> a cnn-family encoder checkpoint.

    nnUNetv2_vismae_convert --from nnssl checkpoint_final.pth encoder.safetensors

nnssl's ``AbstractBaseTrainer.save_checkpoint`` writes a ``torch.save`` dict: ``network_weights`` (the state
dict of the whole pretraining network), ``nnssl_adaptation_plan`` (``AdaptationPlan.serialize()``: plain
dicts, lists and strings) and training state (optimizer, logging, init args); the published checkpoints
add ``citations``. The file is read with ``torch.load(weights_only=True)`` only. The plan's architecture
becomes the dynamic-network-architectures block nnU-Net's plans hold (nnssl's ``ResEncL`` preset spelled
out), the tensors under the plan's ``key_to_stem`` and ``key_to_encoder`` become the checkpoint's (named
relative to the network's encoder module, as in every cnn checkpoint), and the plan's normalization,
spacing and patch size, the file's citations and its origin go into the metadata.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from .errors import CheckpointError
from .foreign_files import NNSSL_PLAN_KEY
from .schema import shown

NNSSL = "nnssl"
WEIGHTS_KEY = "network_weights"
RESENC_L = "ResEncL"
# the conv op of the architecture -> the checkpoint's spatial_dims (written only when 3)


@dataclass
class NnsslFile:
    """What was read from an nnssl checkpoint."""

    state_dict: dict[str, torch.Tensor]
    plan: dict  # the nnssl_adaptation_plan
    citations: object  # as the file holds them; citations.usable_citations keeps what is printable
    trainer: object
    epoch: object


def _op(cls: type) -> str:
    """A class's name as nnU-Net's planners write it."""
    return f"{cls.__module__}.{cls.__name__}"


def read_nnssl_file(path: Path) -> NnsslFile:
    """The weights and adaptation plan of an nnssl checkpoint, read without running pickled code."""
    from .foreign_files import torch_load_safely

    if not path.is_file():
        raise CheckpointError(f"Input weights {path} do not exist or are not a file.")
    loaded = torch_load_safely(path)
    if not isinstance(loaded, Mapping) or WEIGHTS_KEY not in loaded or NNSSL_PLAN_KEY not in loaded:
        raise CheckpointError(
            f"{path} is not an nnssl checkpoint: expected a torch.save dict holding {WEIGHTS_KEY!r} and "
            f"{NNSSL_PLAN_KEY!r} (what nnssl's save_checkpoint writes)."
        )
    state, plan = loaded[WEIGHTS_KEY], loaded[NNSSL_PLAN_KEY]
    if not (
        isinstance(state, Mapping)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CheckpointError(f"{path}: its {WEIGHTS_KEY!r} is not a state dict of tensors.")
    if not isinstance(plan, Mapping):
        raise CheckpointError(
            f"{path}: its {NNSSL_PLAN_KEY!r} is {type(plan).__name__}, expected the dict nnssl's "
            "AdaptationPlan.serialize() writes."
        )
    return NnsslFile(
        dict(state), dict(plan), loaded.get("citations"), loaded.get("trainer_name"), loaded.get("current_epoch")
    )


# --------------------------------------------------------------------------------- architecture
def resenc_l_architecture() -> dict:
    """nnssl's ``ResEncL`` preset (``architecture_registry.get_res_enc_l``: the ResEnc-L of "Revisiting MAE
    pre-training for 3D medical image segmentation") as the architecture block of nnU-Net's plans."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    n_stages = 6
    return {
        "network_class_name": _op(ResidualEncoderUNet),
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [32, 64, 128, 256, 320, 320],
            "conv_op": _op(nn.Conv3d),
            "kernel_sizes": [[3, 3, 3] for _ in range(n_stages)],
            "strides": [[1, 1, 1]] + [[2, 2, 2] for _ in range(n_stages - 1)],
            "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
            "n_conv_per_stage_decoder": [1] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": _op(nn.InstanceNorm3d),
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": _op(nn.LeakyReLU),
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def architecture_of(plan: Mapping, where: str) -> dict:
    """The architecture block of the plan's network: the ResEncL preset, or a dynamic-network-architectures
    U-Net of the cnn family (nnssl writes it bare, e.g. ResidualEncoderUNet) with the plan's kwargs."""
    from .network_classes import cnn_network_classes

    plans = plan.get("architecture_plans")
    name = plans.get("arch_class_name") if isinstance(plans, Mapping) else None
    if name == RESENC_L:
        return resenc_l_architecture()
    classes = {alias: cls for dotted, cls in cnn_network_classes().items() for alias in (dotted, cls.__name__)}
    cls = classes.get(name) if isinstance(name, str) else None
    kwargs = plans.get("arch_kwargs") if cls else None
    if not isinstance(kwargs, Mapping):
        known = ", ".join(dict.fromkeys([RESENC_L, *(c.__name__ for c in classes.values())]))
        detail = "" if cls is None else " without its arch_kwargs"
        raise CheckpointError(
            f"{where}: its adaptation plan names the architecture {shown(name)}{detail}, which is not one "
            f"dynamic-network-architectures builds as nnU-Net's own network ({known}); it cannot be converted."
        )
    required = plans.get("arch_kwargs_requiring_import")
    return {
        "network_class_name": _op(cls),
        "arch_kwargs": dict(kwargs),
        "_kw_requires_import": list(required) if isinstance(required, (list, tuple)) else required,
    }


def encoder_config_of(architecture: dict, plan: Mapping, where: str) -> dict:
    """The cnn encoder config of the network the block builds with the plan's input channels; only listed
    classes are named, and the kwargs are bounded, before anything is built."""
    from .cnn_encoder import cnn_encoder_config, config_problems, conv_op_dims
    from .schema import integer

    channels = plan.get("pretrain_num_input_channels")
    if not integer(1, 64).accepts(channels):
        raise CheckpointError(
            f"{where}: its adaptation plan's pretrain_num_input_channels is {shown(channels)}, expected an "
            "integer from 1 to 64."
        )
    problems = config_problems({"architecture": architecture})
    if problems:
        raise CheckpointError(f"{where}: its adaptation plan's architecture is refused: " + " ".join(problems))
    try:
        config = cnn_encoder_config(architecture, channels)
    except (AssertionError, AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        reason = " ".join(str(e).split())[:300]
        raise CheckpointError(
            f"{where}: its adaptation plan's architecture does not build a network ({type(e).__name__}: {reason})."
        ) from None
    if conv_op_dims(config["conv_op"]) is None:
        raise CheckpointError(f"{where}: its network convolves with {config['conv_op']}, expected Conv2d or Conv3d.")
    return config


# ------------------------------------------------------------------------------------- tensors
def encoder_keys(plan: Mapping, where: str) -> tuple[str, str]:
    """(key_to_stem, key_to_encoder) of the plan: where the pretraining network keeps them."""
    keys = tuple(plan.get(k) for k in ("key_to_stem", "key_to_encoder"))
    if not all(isinstance(k, str) and k for k in keys):
        raise CheckpointError(
            f"{where}: its adaptation plan's key_to_stem and key_to_encoder are {shown(list(keys))}, expected "
            "the module paths of the stem and the encoder."
        )
    return keys


def encoder_tensors(state: Mapping, plan_keys: tuple[str, str], config: dict) -> tuple[dict, dict]:
    """The tensors under the plan's stem and encoder paths, moved to the network's paths and named relative
    to its encoder module (the load root), and the count of every other tensor by its first name."""
    moves = list(zip(plan_keys, (config["key_to_stem"], config["key_to_encoder"])))
    root = config["load_root"] + "."
    tensors, dropped = {}, Counter()
    for name, value in state.items():
        moved = next((new + name[len(old) :] for old, new in moves if name.startswith(old + ".")), None)
        if moved is None or not moved.startswith(root):
            dropped[name.split(".", 1)[0]] += 1
            continue
        tensors[moved[len(root) :]] = value
    return tensors, dict(sorted(dropped.items()))


def distinct_views(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One name per distinct view of the stored values: nnssl's networks reach a tensor under several
    names (a conv is also ``all_modules.0``, SparK holds the U-Net twice), which copy the same bytes."""
    first = {}
    for name, t in tensors.items():
        view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        first.setdefault(view, name)
    return {name: tensors[name] for name in first.values()}


def float32_copies(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies, floating point ones as float32; only for tensors whose shapes were checked."""
    out = {}
    for name, value in tensors.items():
        dtype = torch.float32 if value.is_floating_point() else value.dtype
        out[name] = value.detach().to("cpu", dtype, copy=True).contiguous()
    return out


# ------------------------------------------------------------------------------------ metadata
def pretraining_configuration(plan: Mapping, where: str) -> dict:
    """The configuration nnssl pretrained with (its plan keeps only that one)."""
    pretrain_plan = plan.get("pretrain_plan")
    configurations = pretrain_plan.get("configurations") if isinstance(pretrain_plan, Mapping) else None
    first = next(iter(configurations.values()), None) if isinstance(configurations, Mapping) else None
    if not isinstance(first, Mapping):
        raise CheckpointError(
            f"{where}: its adaptation plan's pretrain_plan holds no configuration, expected the one nnssl "
            "pretrained with (spacing, normalization, patch size)."
        )
    return dict(first)


def normalization_of(configuration: Mapping, where: str) -> dict:
    """The input the weights expect: nnU-Net's normalization schemes, as nnssl's plan preprocessed its data."""
    from .schema import normalization_problems

    norm = {
        "scheme": "nnunet",
        "normalization_schemes": configuration.get("normalization_schemes"),
        "description": "as nnssl preprocessed the pretraining data: its plan's normalization schemes, "
        f"at spacing {configuration.get('spacing')}",
    }
    if configuration.get("use_mask_for_norm") is not None:
        norm["use_mask_for_norm"] = configuration.get("use_mask_for_norm")
    problems = normalization_problems(norm)
    if problems:
        raise CheckpointError(
            f"{where}: its pretraining configuration's normalization is refused: " + " ".join(problems)
        )
    return norm


def _numbers(value) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def nnssl_metadata(src: Path, file: NnsslFile, config: dict, dropped: dict, where: str) -> dict:
    """The checkpoint's metadata: the encoder config, the input the weights expect, the pretraining's
    spacing and patch size, the file's citations and a ``converted_from`` record."""
    from .citations import CITATIONS, usable_citations
    from .conversion import CONVERTER, file_sha256
    from .families import CNN

    plan, configuration = file.plan, pretraining_configuration(file.plan, where)
    metadata = {"family": CNN.name, "encoder_config": config, "normalization": normalization_of(configuration, where)}
    for key, value in (
        ("spacing", configuration.get("spacing")),
        ("patch_size", configuration.get("patch_size")),
        ("recommended_downstream_patch_size", plan.get("recommended_downstream_patchsize")),
    ):
        if _numbers(value):
            metadata[key] = list(value)
    citations = usable_citations(file.citations)
    if citations:
        metadata[CITATIONS] = citations
    pretrain_plan = plan.get("pretrain_plan") or {}
    metadata["converted_from"] = {
        "layout": NNSSL,
        "file": src.name,
        "sha256": file_sha256(src),
        "container": f"torch.save ['{WEIGHTS_KEY}']",
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "converter": CONVERTER,
        "architecture": str(plan["architecture_plans"]["arch_class_name"]),
        "key_to_encoder": plan["key_to_encoder"],
        "key_to_stem": plan["key_to_stem"],
        "trainer": file.trainer if isinstance(file.trainer, str) else None,
        "epoch": file.epoch if isinstance(file.epoch, int) else None,
        "pretrain_dataset": pretrain_plan.get("dataset_name")
        if isinstance(pretrain_plan.get("dataset_name"), str)
        else None,
        "dropped": dropped,
    }
    return metadata


# ----------------------------------------------------------------------------------- converting
def verify_cnn_loads_completely(checkpoint, log: Callable[[str], object] = print):
    """Build the checkpoint's network, load encoder and stem as fine-tuning does, and require every
    tensor to be loaded as is."""
    from .cnn_encoder import build_stock_network, encoder_and_stem_as_encoder
    from .conversion import require_complete_load
    from .loader import load_encoder_into

    config = checkpoint.encoder_config
    network = build_stock_network(config["architecture"], config["in_channels"], initialize=False)
    with encoder_and_stem_as_encoder(network):
        report = load_encoder_into(network, checkpoint, log=log)
    return require_complete_load(report, type(network).__name__)


def convert_nnssl(src: Path, dst: Path, log: Callable[[str], object] = print, license_text: str | None = None, cite=()):
    """Convert the nnssl checkpoint ``src`` to a cnn encoder checkpoint at ``dst`` (see module doc), with
    the licence and citations given; CheckpointError, writing nothing, on any problem."""
    from .citations import add_attribution
    from .conversion import write_verified
    from .families import CNN
    from .foreign_files import refuse_repeated_values
    from .format import check_tensor_set

    where = f"nnssl checkpoint {src}"
    file = read_nnssl_file(src)
    architecture = architecture_of(file.plan, where)
    config = encoder_config_of(architecture, file.plan, where)
    tensors, dropped = encoder_tensors(file.state_dict, encoder_keys(file.plan, where), config)
    check_tensor_set(CNN, config, tensors, f"The stem and encoder tensors of {where}")
    refuse_repeated_values(distinct_views(tensors), src)  # before any value is copied
    metadata = add_attribution(nnssl_metadata(src, file, config, dropped, where), license_text, cite, src.name)
    groups = ", ".join(f"{k} {n}" for k, n in dropped.items()) or "nothing"
    log(
        f"Read {src} (nnssl, {len(file.state_dict)} tensors): architecture "
        f"{metadata['converted_from']['architecture']} -> {architecture['network_class_name']}, "
        f"{len(tensors)} stem and encoder tensors; dropped {groups}."
    )
    log(f"Normalization {metadata['normalization']['normalization_schemes']}, spacing {metadata.get('spacing')}.")
    return write_verified(dst, float32_copies(tensors), metadata, log, verify_cnn_loads_completely)
