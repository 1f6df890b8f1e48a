import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures import abstract_arch

from nnunetv2_vismae.architectures import SwinEncoder, SwinEncoderConfig, SwinUNet

SMALL = {"embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4}


def ds_scales(strides):
    """nnU-Net's deep-supervision scales from the plans' strides (nnUNetTrainer's formula)."""
    return [list(s) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


@pytest.mark.parametrize("decoder", ["conv", "swin"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape", [(64, 64), (96, 160)])
def test_deep_supervision_outputs_match_plans_strides(decoder, channels, shape):
    strides = SwinUNet.output_strides(SwinEncoderConfig(**SMALL), decoder)
    net = SwinUNet(channels, 4, deep_supervision=True, encoder=SMALL, decoder=decoder, strides=strides)
    outputs = net(torch.randn(2, channels, *shape))
    assert isinstance(outputs, list)
    assert len(outputs) == len(ds_scales(strides))
    for out, scale in zip(outputs, ds_scales(strides)):
        assert out.shape == (2, 4, round(shape[0] * scale[0]), round(shape[1] * scale[1]))


@pytest.mark.parametrize("decoder", ["conv", "swin"])
def test_without_deep_supervision_returns_full_resolution_tensor(decoder):
    net = SwinUNet(2, 3, deep_supervision=False, encoder=SMALL, decoder=decoder)
    out = net(torch.randn(1, 2, 64, 96))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 64, 96)
    net.decoder.deep_supervision = True  # what nnUNetTrainer.set_deep_supervision_enabled does
    assert isinstance(net(torch.randn(1, 2, 64, 96)), list)


def test_gradients_reach_encoder_and_decoder():
    net = SwinUNet(1, 2, deep_supervision=True, encoder=SMALL, decoder="conv")
    sum(o.mean() for o in net(torch.randn(1, 1, 64, 64))).backward()
    assert net.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.decoder.parameters())


def test_default_encoder_is_vismae_recipe():
    config = SwinUNet(1, 2).encoder.config
    assert (config.patch_size, config.embed_dim, config.depths, config.num_heads, config.window_size) == (
        4,
        96,
        (2, 2, 2, 2),
        (3, 6, 12, 24),
        7,
    )


def test_pretrained_weight_keys_follow_dynamic_network_architectures():
    net = SwinUNet(3, 2, encoder=SMALL)
    abstract_arch.test_submodules_loadable(net)
    assert net.get_submodule(net.key_to_encoder) is net.encoder
    assert net.get_submodule(net.keys_to_in_proj[0]).weight.shape[1] == 3


def test_encoder_weights_are_exactly_the_standalone_encoder():
    torch.manual_seed(0)
    standalone = SwinEncoder(**SMALL)
    net = SwinUNet(1, 2, encoder=SMALL)
    net.encoder.load_state_dict(standalone.state_dict())  # same names, same shapes
    x = torch.randn(1, 1, 64, 64)
    standalone.eval(), net.eval()
    for a, b in zip(standalone(x), net.encoder(x)):
        torch.testing.assert_close(a, b)


def test_wrong_strides_and_decoder_are_refused():
    with pytest.raises(ValueError, match="strides"):
        SwinUNet(1, 2, encoder=SMALL, decoder="swin", strides=[[1, 1], [2, 2]])
    with pytest.raises(ValueError, match="decoder"):
        SwinUNet(1, 2, encoder=SMALL, decoder="mlp")


@pytest.mark.parametrize("decoder", ["conv", "swin"])
def test_torch_compile_traces_one_graph_that_computes_the_same(decoder):
    """nnU-Net compiles the network on CUDA: a graph break splits it into many graphs, each a recompile
    risk. Two blocks per stage (shifted windows, masks) and 96 px (padded windows at 6 and 3 tokens)."""
    torch.manual_seed(0)
    encoder = {**SMALL, "depths": [2, 2, 2, 2]}
    net = SwinUNet(1, 3, deep_supervision=True, encoder=encoder, decoder=decoder)
    x = torch.randn(2, 1, 96, 96)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(net)(x)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    net.eval()  # no drop-path randomness: compiled and eager must agree
    expected = net(x)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="eager", fullgraph=True)(x)
    for a, b in zip(compiled, expected):
        torch.testing.assert_close(a, b)
