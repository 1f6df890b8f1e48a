"""Swin3dUNet: the 3D VisMAE network the plans name (deep supervision at the plans' strides, anisotropic
patches, a swin3d checkpoint loaded whole, one graph under torch.compile)."""

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures import abstract_arch

from nnunetv2_vismae.architectures import Swin3dEncoderConfig, Swin3dUNet
from nnunetv2_vismae.checkpoint import load_encoder_into, read_encoder_checkpoint
from tests.conftest import TINY_ENCODER_3D as SMALL
from tests.conftest import save_swin3d_checkpoint


def ds_scales(strides):
    """nnU-Net's deep-supervision scales from the plans' strides (nnUNetTrainer's formula)."""
    return [list(s) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


@pytest.mark.parametrize(
    "patch, shape",
    [((2, 2, 2), (32, 32, 32)), ((1, 2, 2), (16, 64, 32)), ((2, 4, 4), (32, 64, 64))],
)
def test_deep_supervision_outputs_are_at_the_plans_strides(patch, shape):
    encoder = {**SMALL, "patch_size": list(patch)}
    strides = Swin3dUNet.output_strides(Swin3dEncoderConfig.from_json(encoder))
    assert strides[0] == [1, 1, 1] and np.prod(strides, axis=0).tolist() == [p * 16 for p in patch]
    net = Swin3dUNet(2, 3, deep_supervision=True, encoder=encoder, strides=strides)
    outputs = net(torch.randn(1, 2, *shape))
    assert len(outputs) == len(ds_scales(strides)) == len(strides) - 1
    for out, scale in zip(outputs, ds_scales(strides)):
        assert out.shape == (1, 3, *(round(s * k) for s, k in zip(shape, scale)))


def test_anisotropic_patch_has_a_full_resolution_stem_only():
    strides = Swin3dUNet.output_strides(Swin3dEncoderConfig.from_json({**SMALL, "patch_size": [1, 2, 2]}))
    assert strides[:3] == [[1, 1, 1], [1, 2, 2], [2, 2, 2]]


def test_without_deep_supervision_returns_full_resolution_tensor():
    net = Swin3dUNet(1, 2, encoder=SMALL)
    out = net(torch.randn(1, 1, 32, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 32, 32, 32)
    net.decoder.deep_supervision = True  # what nnUNetTrainer.set_deep_supervision_enabled does
    assert isinstance(net(torch.randn(1, 1, 32, 32, 32)), list)


def test_default_encoder_is_swinunetrs():
    with torch.device("meta"):
        config = Swin3dUNet(1, 2).encoder.config
    assert config == Swin3dEncoderConfig()
    assert (config.patch_size, config.embed_dim, config.window_size) == ((2, 2, 2), 48, (7, 7, 7))


def test_wrong_strides_and_patches_are_refused():
    with pytest.raises(ValueError, match=r"Swin3dUNet produces outputs at strides .*re-run nnUNetv2_vismae_plan"):
        Swin3dUNet(1, 2, encoder=SMALL, strides=[[1, 1], [2, 2]])
    with pytest.raises(ValueError, match="power-of-two"):
        Swin3dUNet(1, 2, encoder={**SMALL, "patch_size": [3, 2, 2]})


def test_a_swin3d_checkpoint_loads_into_every_encoder_tensor_with_its_channels_adapted(tmp_path):
    checkpoint = read_encoder_checkpoint(save_swin3d_checkpoint(tmp_path / "swin3d.safetensors", in_channels=1))
    net = Swin3dUNet(2, 3, encoder=SMALL)
    abstract_arch.test_submodules_loadable(net)
    assert net.get_submodule(net.key_to_encoder) is net.encoder
    report = load_encoder_into(net, checkpoint, log=lambda _: None)
    assert report.fraction_loaded == 1.0 and report.adapted == ["patch_embed.proj.weight"]
    assert not report.missing and not report.unexpected
    assert net.encoder.patch_embed.proj.weight.shape[1] == 2
    for name, value in checkpoint.tensors.items():
        if name != "patch_embed.proj.weight":
            assert torch.equal(net.encoder.state_dict()[name], value), name


def test_torch_compile_traces_one_graph():
    """nnU-Net compiles the network on CUDA: two blocks per stage (shifted windows, masks), padded windows
    (the encoder's own test compares the compiled function with the eager one)."""
    torch.manual_seed(0)
    net = Swin3dUNet(1, 2, deep_supervision=True, encoder={**SMALL, "depths": [2, 2, 2, 2], "window_size": [2, 4, 4]})
    x = torch.randn(1, 1, 32, 32, 32)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(net)(x)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
