"""Load an encoder checkpoint into a network that exposes nnU-Net's pretrained-weight attributes.

The network names its encoder with ``key_to_encoder`` (a ``get_submodule`` path), its stem with
``key_to_stem`` and its input projections with ``keys_to_in_proj`` (the attributes of
dynamic_network_architectures' ``AbstractDynamicNetworkArchitectures``). Checkpoint tensor names
are relative to the encoder. Everything is checked and adapted first; the network is modified
only when the whole load can succeed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Union

import torch
from torch import nn

from .adapt import in_channels_adapter
from .citations import citation_notice
from .errors import CheckpointError
from .families import family_of_module, get_family
from .format import EncoderCheckpoint, PathLike, read_encoder_checkpoint


@dataclass
class LoadReport:
    """What ``load_encoder_into`` did. Names are relative to the network's encoder.

    loaded:      network tensors that received a checkpoint tensor (adapted ones included).
    adapted:     the subset of ``loaded`` that was reshaped; ``adaptations`` says how.
    missing:     network tensors without a checkpoint tensor (left as initialised).
    unexpected:  checkpoint tensors the network has no place for (ignored).
    """

    checkpoint: str
    family: str
    content_hash: str
    num_network_tensors: int
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    adaptations: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def num_loaded(self) -> int:
        return len(self.loaded)

    @property
    def num_adapted(self) -> int:
        return len(self.adapted)

    @property
    def num_missing(self) -> int:
        return len(self.missing)

    @property
    def num_unexpected(self) -> int:
        return len(self.unexpected)

    @property
    def fraction_loaded(self) -> float:
        """1.0 when every encoder tensor of the network got a checkpoint tensor."""
        return self.num_loaded / self.num_network_tensors if self.num_network_tensors else 0.0

    def summary(self) -> str:
        lines = [
            f"Loaded {self.family} encoder checkpoint {self.checkpoint} "
            f"(sha256 {self.content_hash[:12]}): {self.num_loaded}/{self.num_network_tensors} "
            f"encoder tensors ({100 * self.fraction_loaded:.1f}%), {self.num_adapted} adapted, "
            f"{self.num_missing} missing, {self.num_unexpected} unexpected."
        ]
        lines += [f"  adapted {name}: {self.adaptations[name]}" for name in self.adapted]
        lines += [f"  missing (kept initial values) {name}" for name in self.missing]
        lines += [f"  unexpected (ignored) {name}" for name in self.unexpected]
        return "\n".join(lines)


def _encoder_of(network: nn.Module) -> tuple[str, nn.Module]:
    key = getattr(network, "key_to_encoder", None)
    if not isinstance(key, str):
        raise CheckpointError(
            f"Network {type(network).__name__} has no 'key_to_encoder' attribute, "
            "expected the path of its encoder submodule (e.g. 'encoder')."
        )
    try:
        return key, (network.get_submodule(key) if key else network)
    except AttributeError:
        raise CheckpointError(
            f"Network {type(network).__name__} has key_to_encoder {key!r}, but no submodule of that name."
        ) from None


def _in_proj_weight_names(network: nn.Module, encoder_key: str) -> list[str]:
    """Names (relative to the encoder) of the input projection weights."""
    prefix = f"{encoder_key}." if encoder_key else ""
    names = []
    for key in getattr(network, "keys_to_in_proj", ()) or ():
        if key.startswith(prefix):
            names.append(f"{key[len(prefix) :]}.weight")
    return names


def _fixed_config_differences(family, checkpoint_config: dict, network_config: dict) -> list[str]:
    return [k for k in family.fixed_config_keys if checkpoint_config.get(k) != network_config.get(k)]


def load_encoder_into(
    network: nn.Module,
    path_or_checkpoint: Union[PathLike, EncoderCheckpoint],
    log: Callable[[str], object] = print,
    *,
    allow_missing: bool = False,
) -> LoadReport:
    """Copy a checkpoint's encoder weights into ``network``'s encoder and return a LoadReport.

    Adapts, and reports, a different number of input channels (input projection repeated over
    the channel axis and rescaled), window size (relative position tables resized) and patch size
    (patch embedding resampled). Raises CheckpointError, before modifying anything, when the
    family, the spatial dimensions or the fixed part of the config (swin: embed_dim, depths, num_heads, mlp_ratio and
    the shift rule and the final norm, which change what the weights compute) differs, when a checkpoint tensor
    cannot be adapted to the network's shape, or when a network tensor has no checkpoint tensor
    (unless ``allow_missing``, which keeps its initial value).
    """
    checkpoint = (
        path_or_checkpoint
        if isinstance(path_or_checkpoint, EncoderCheckpoint)
        else read_encoder_checkpoint(path_or_checkpoint)
    )
    source = checkpoint.path or "<in memory>"
    encoder_key, encoder = _encoder_of(network)
    net_family, net_config = family_of_module(encoder)
    ckpt_family = get_family(checkpoint.family, f"Encoder checkpoint {source}")
    if net_family is None or net_family.name != ckpt_family.name:
        got = net_family.name if net_family else f"unknown ({type(encoder).__name__})"
        raise CheckpointError(
            f"Encoder checkpoint {source} holds a {ckpt_family.name} encoder, but "
            f"the network's encoder family is {got}."
        )
    network_dims = net_family.spatial_dims(net_config)
    if checkpoint.spatial_dims != network_dims:
        raise CheckpointError(
            f"Encoder checkpoint {source} holds a {checkpoint.spatial_dims}D encoder, but the network's "
            f"encoder is {network_dims}D; pretrain on the configuration you fine-tune (2d or 3d_fullres)."
        )
    diffs = _fixed_config_differences(ckpt_family, checkpoint.encoder_config, net_config)
    if diffs:

        def pick(config):
            return json.dumps({k: config.get(k) for k in ckpt_family.fixed_config_keys})

        raise CheckpointError(
            f"Encoder checkpoint {source} does not fit the network: its encoder "
            f"{pick(checkpoint.encoder_config)} differs from the network's "
            f"{pick(net_config)} in {diffs}, which cannot be adapted."
        )

    adapters = [in_channels_adapter(n) for n in _in_proj_weight_names(network, encoder_key)]
    adapters += list(ckpt_family.adapters)
    current = encoder.state_dict()
    report = LoadReport(
        checkpoint=source,
        family=ckpt_family.name,
        content_hash=checkpoint.content_hash,
        num_network_tensors=len(current),
    )
    new_state = {}
    for name, target in current.items():
        if name not in checkpoint.tensors:
            report.missing.append(name)
            continue
        value, how = checkpoint.tensors[name], []
        for adapter in adapters:
            if value.shape == target.shape:
                break
            result = adapter(name, value, target, encoder)
            if result is not None:
                value, description = result
                how.append(description)
        if value.shape != target.shape:
            raise CheckpointError(
                f"Encoder checkpoint {source} tensor {name!r} has shape "
                f"{list(checkpoint.tensors[name].shape)}, which cannot be adapted to the network's "
                f"{list(target.shape)}."
            )
        new_state[name] = value
        report.loaded.append(name)
        if how:
            report.adapted.append(name)
            report.adaptations[name] = "; ".join(how)
    report.unexpected = sorted(set(checkpoint.tensors) - set(current))
    if report.missing and not allow_missing:
        raise CheckpointError(
            f"Encoder checkpoint {source} lacks {len(report.missing)} of the "
            f"network's encoder tensors (e.g. {report.missing[0]!r})."
        )

    with torch.no_grad():
        for name, value in new_state.items():
            current[name].copy_(value)  # state_dict tensors share storage with the module
    log(report.summary())
    notice = citation_notice(checkpoint.metadata)  # as nnU-Net master prints an nnssl checkpoint's papers
    if notice:
        log(notice)
    return report
