"""Parameter groups shared by fine-tuning, classification and pretraining."""

import pytest
import torch
from timm.optim import param_groups_weight_decay

from nnunetv2_vismae.architectures import SwinUNet
from nnunetv2_vismae.optim.parameter_groups import (
    NO_WEIGHT_DECAY,
    decays,
    encoder_layer_ids,
    param_groups,
    weight_decay_groups,
)

DEPTHS = (1, 2, 1, 1)


@pytest.fixture(scope="module")
def network():
    return SwinUNet(
        1, 2, encoder={"embed_dim": 12, "depths": list(DEPTHS), "num_heads": [1, 1, 2, 2], "window_size": 4}
    )


def test_layers_are_the_patch_embedding_then_one_per_block(network):
    layers = encoder_layer_ids(network)
    assert layers["encoder.patch_embed.proj.weight"] == 0
    assert layers["encoder.layers.0.blocks.0.attn.qkv.weight"] == 1
    assert layers["encoder.layers.1.downsample.reduction.weight"] == 2  # with its stage's first block
    assert layers["encoder.layers.1.blocks.1.mlp.fc1.weight"] == 3
    assert layers["encoder.norm.weight"] == sum(DEPTHS) == 5  # with the last block
    assert set(layers) == {f"encoder.{n}" for n, _ in network.encoder.named_parameters()}


def test_norms_biases_and_position_tables_skip_weight_decay():
    assert not decays("encoder.layers.0.blocks.0.attn.relative_position_bias_table", torch.zeros(49, 3))
    assert not decays("encoder.norm.weight", torch.zeros(8))
    assert not decays("decoder.conv.bias", torch.zeros(8))
    assert decays("encoder.layers.0.blocks.0.attn.qkv.weight", torch.zeros(8, 8))


def test_weight_decay_is_timms_rule(network):
    """``decays`` is the rule of timm's param_groups_weight_decay with NO_WEIGHT_DECAY: the same tensors decay."""
    timm_decayed = {
        id(p)
        for g in param_groups_weight_decay(network, 0.05, NO_WEIGHT_DECAY)
        if g["weight_decay"]
        for p in g["params"]
    }
    assert timm_decayed == {id(p) for n, p in network.named_parameters() if decays(n, p)}


def test_pretrainings_weight_decay_groups_are_timms(network):
    """The same groups, tensors and order as timm's param_groups_weight_decay, which pretraining called before."""
    network.encoder.patch_embed.requires_grad_(False)
    try:
        ours, timms = (
            f(network, 0.05, ("*norm*", *NO_WEIGHT_DECAY)) for f in (weight_decay_groups, param_groups_weight_decay)
        )
        assert [(g["weight_decay"], [id(p) for p in g["params"]]) for g in ours] == [
            (g["weight_decay"], [id(p) for p in g["params"]]) for g in timms
        ]
    finally:
        network.encoder.patch_embed.requires_grad_(True)


def test_groups_without_layer_decay_split_encoder_and_decay_only(network):
    network.encoder.patch_embed.requires_grad_(False)
    try:
        groups = param_groups(network, 0.05)
    finally:
        network.encoder.patch_embed.requires_grad_(True)
    assert {(g["lr_scale"], g["weight_decay"], g["encoder"]) for g in groups} == {
        (1.0, 0.05, True),
        (1.0, 0.0, True),
        (1.0, 0.05, False),
        (1.0, 0.0, False),
    }
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for n, p in network.named_parameters() if not n.startswith("encoder.patch_embed.")}


def test_layer_decay_scales_by_layers_to_the_decoder(network):
    groups = param_groups(network, 0.05, layer_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    layers = encoder_layer_ids(network)
    for name, p in network.named_parameters():
        expected = 0.5 ** (sum(DEPTHS) + 1 - layers[name]) if name in layers else 1.0
        assert scale_of[id(p)] == pytest.approx(expected), name
    assert all(g["encoder"] == (g["lr_scale"] < 1) for g in groups)
