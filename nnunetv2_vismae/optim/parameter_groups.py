"""Optimizer parameter groups: which tensors decay, and layer-wise lr decay over a Swin encoder.

Weight decay follows timm's rule (``timm.optim.param_groups_weight_decay``, whose two groups
pretraining takes from ``weight_decay_groups``): none for 1-D tensors (norms, biases), ``*.bias`` and
the names ``NO_WEIGHT_DECAY`` matches. Layer-wise decay follows BEiT as timm's ``param_groups_layer_decay``
does, with the layers of timm's Swin ``group_matcher``; timm's function itself does not fit, as it
needs the matcher on the whole network and cannot mark the encoder's groups, which the sawtooth
schedule holds at lr 0.
"""

from __future__ import annotations

from fnmatch import fnmatch

import torch
from timm.models import group_parameters
from torch import nn

# relative position tables are learned offsets of the attention logits, not weights to shrink
NO_WEIGHT_DECAY = ("*relative_position_bias_table",)


def decays(name: str, param: torch.Tensor, no_weight_decay: tuple[str, ...] = NO_WEIGHT_DECAY) -> bool:
    """Whether weight decay applies to ``param``, by timm's rule with the name patterns ``no_weight_decay``."""
    return not (param.ndim <= 1 or name.endswith(".bias") or any(fnmatch(name, p) for p in no_weight_decay))


def weight_decay_groups(
    network: nn.Module, weight_decay: float, no_weight_decay: tuple[str, ...] = NO_WEIGHT_DECAY
) -> list[dict]:
    """Two groups as timm's ``param_groups_weight_decay`` makes them: the tensors without weight decay, then
    those with, each in the network's order; tensors that do not train, and an empty group, are left out."""
    groups = {False: [], True: []}
    for name, param in network.named_parameters():
        if param.requires_grad:
            groups[decays(name, param, no_weight_decay)].append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0} for decay, params in groups.items() if params
    ]


def encoder_layer_ids(network: nn.Module) -> dict[str, int]:
    """Layer of each parameter of ``network.encoder`` (a Swin with timm's ``group_matcher``: timm's, or the 3D
    one), by the network's names: 0 for the patch embedding, then one per block in order; in timm's Swin a
    stage's patch merging goes with its first block (it opens the stage), in the 3D one with its last (it
    closes it), the final norm with the last block."""
    encoder = network.encoder
    layers = group_parameters(encoder, encoder.group_matcher(coarse=False), reverse=True)
    return {f"encoder.{name}": layer for name, layer in layers.items()}


def param_groups(network: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Groups by (lr scale, weight decay, encoder or not), in the order first met; tensors that do not
    train are left out. With ``layer_decay`` an encoder tensor's ``lr_scale`` (which the schedules
    apply) is ``layer_decay ** (layers from it to the decoder)``, the last block's ``layer_decay``."""
    layers = encoder_layer_ids(network) if layer_decay is not None else {}
    above_encoder = max(layers.values(), default=0) + 1
    groups: dict[tuple, list] = {}
    for name, param in network.named_parameters():
        if param.requires_grad:
            scale = layer_decay ** (above_encoder - layers[name]) if name in layers else 1.0
            groups.setdefault((scale, decays(name, param), name.startswith("encoder.")), []).append(param)
    return [
        {"params": params, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0, "encoder": encoder}
        for (scale, decay, encoder), params in groups.items()
    ]
