"""The 3D Swin encoder against MONAI's SwinTransformer(spatial_dims=3) with MONAI's random weights renamed
into ours (float64, so that only rounding differs), and the invariance MONAI lacks: a block computes
the same function at every feature size, a map that does not fill its windows being extended by
empty tokens (zero after norm1)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_vismae.architectures.swin3d_encoder import (
    MERGE_OFFSETS,
    Swin3dEncoder,
    Swin3dEncoderConfig,
    Swin3dStage,
    monai_to_ours,
    relative_position_index,
    shift_mask,
)

monai = pytest.importorskip("monai", reason="MONAI is a test dependency: pip install -e .[test]")
monai_swin = pytest.importorskip(
    "monai.networks.nets.swin_unetr", reason="MONAI is a test dependency: pip install -e .[test]"
)
warnings.filterwarnings("ignore", category=FutureWarning)

TIGHT = {"rtol": 1e-12, "atol": 1e-12}
# the order of MONAI's default patch merging, which changed in MONAI 1.5 (see MERGE_OFFSETS)
MONAI_MERGING = "monai-1.4" if tuple(int(v) for v in monai.__version__.split(".")[:2]) < (1, 5) else "monai-1.5"


def randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter drawn at random (MONAI zero-inits some, which would hide a wrong mapping)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module.double()


def monai_encoder(config: Swin3dEncoderConfig):
    return monai_swin.SwinTransformer(
        in_chans=config.in_channels,
        embed_dim=config.embed_dim,
        window_size=config.window_size,
        patch_size=config.patch_size,
        depths=config.depths,
        num_heads=config.num_heads,
        spatial_dims=3,
    )


def encoders(config: Swin3dEncoderConfig):
    theirs = randomized(monai_encoder(config))
    ours = Swin3dEncoder(config).double()
    ours.load_state_dict(monai_to_ours(theirs.state_dict()), strict=True)
    return theirs, ours


def grads_in_our_names(theirs: torch.nn.Module) -> dict:
    return monai_to_ours({name: p.grad for name, p in theirs.named_parameters()})


def assert_same_forward_and_backward(theirs, ours, x, call_theirs=None):
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs_theirs = (call_theirs or theirs)(x_theirs)
    outs_ours = ours(x_ours)
    outs_theirs = outs_theirs if isinstance(outs_theirs, list) else [outs_theirs]
    outs_ours = outs_ours if isinstance(outs_ours, list) else [outs_ours]
    assert len(outs_theirs) == len(outs_ours)
    torch.manual_seed(1)
    weights = [torch.randn_like(o) for o in outs_ours]  # a loss that weighs every output element differently
    sum((o * w).sum() for o, w in zip(outs_theirs, weights)).backward()
    sum((o * w).sum() for o, w in zip(outs_ours, weights)).backward()
    for a, b in zip(outs_ours, outs_theirs):
        torch.testing.assert_close(a, b, **TIGHT)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, **TIGHT)
    expected = grads_in_our_names(theirs)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], **TIGHT, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize(
    "window, size",
    [
        ((2, 2, 2), (48, 48, 48)),  # the deepest stage 3x3x3 tokens in 2x2x2 windows: padded, shifted by 1
        ((1, 2, 2), (16, 48, 40)),  # anisotropic: no window (and no shift) along depth, 3x3 / 5x5 padded in-plane
    ],
)
def test_stage_outputs_and_gradients_equal_monais_where_it_keeps_its_windows(window, size):
    config = Swin3dEncoderConfig(
        in_channels=2, embed_dim=6, num_heads=(1, 2, 2, 2), window_size=window, merge_offsets=MONAI_MERGING
    )
    theirs, ours = encoders(config)
    assert_same_forward_and_backward(theirs, ours, torch.randn(2, 2, *size, dtype=torch.double))


def test_raw_outputs_equal_monais_unnormalized_ones():
    config = Swin3dEncoderConfig(
        embed_dim=6, num_heads=(1, 2, 2, 2), window_size=(2, 2, 2), normalize_outputs=False, merge_offsets=MONAI_MERGING
    )
    theirs, ours = encoders(config)
    x = torch.randn(1, 1, 48, 48, 48, dtype=torch.double)
    assert_same_forward_and_backward(theirs, ours, x, call_theirs=lambda t: theirs(t, normalize=False))


@pytest.mark.parametrize("tokens", [(5, 6, 7), (8, 9, 9)])
def test_a_stage_with_odd_sizes_pads_its_windows_as_monai_does(tokens):
    """Unshifted and shifted block, windows 3x4x4 padded at every axis, the shift mask, odd merging."""
    window, dim = (3, 4, 4), 8
    theirs = randomized(
        monai_swin.BasicLayer(
            dim, 2, 2, window, drop_path=[0.0, 0.0], qkv_bias=True, downsample=monai_swin.PatchMerging
        )
    )
    ours = Swin3dStage(dim, 2, 2, window, 4.0, [0.0, 0.0], MERGE_OFFSETS[MONAI_MERGING]).double()
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if "relative_position_index" not in k})
    x = torch.randn(2, *tokens, dim, dtype=torch.double)  # channels last, as our stage takes it
    # MONAI's BasicLayer takes and returns channels first
    assert_same_forward_and_backward(
        theirs, ours, x, call_theirs=lambda t: theirs(t.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
    )


def empty_token_stage(window, shift_block: bool):
    """Our stage whose norm1 maps a zero token to zero (its bias zero), so that zero tokens are empty ones."""
    stage = Swin3dStage(8, 2, 2, window, 4.0, [0.0, 0.0], MERGE_OFFSETS["row-major"]).double()
    randomized(stage)
    with torch.no_grad():
        for block in stage.blocks:
            block.norm1.bias.zero_()
    return stage.blocks[1 if shift_block else 0], stage


@pytest.mark.parametrize("shift_block", [False, True])
@pytest.mark.parametrize("tokens", [(2, 3, 5), (4, 4, 4), (6, 1, 7)])
def test_a_block_computes_at_any_size_what_it_computes_on_full_windows(tokens, shift_block):
    """The invariance of padding to full windows: a block on a map of F tokens equals the same block on
    the map extended with empty tokens to whole windows, cropped back to F. It holds at every F,
    smaller or larger than a window, so the weights mean the same thing at every patch size."""
    window = (4, 4, 4)
    block, stage = empty_token_stage(window, shift_block)
    padded = tuple(-(-t // w) * w for t, w in zip(tokens, window))
    x = torch.randn(1, *tokens, 8, dtype=torch.double)
    extended = F.pad(x, (0, 0, 0, padded[2] - tokens[2], 0, padded[1] - tokens[1], 0, padded[0] - tokens[0]))

    def run(t):
        size = tuple(-(-s // w) * w for s, w in zip(t.shape[1:4], window))
        return block(t, shift_mask(size, window, stage.shift, t.device) if shift_block else None)

    torch.testing.assert_close(run(x), run(extended)[:, : tokens[0], : tokens[1], : tokens[2]], **TIGHT)


def test_monai_computes_another_function_where_a_window_is_larger_than_the_map():
    """Why the encoder is our own code: MONAI's block at 2x3x3 tokens in a 4x4x4 window shrinks the
    window (and its relative position bias) instead of extending the map, so the same weights compute
    something else than on the extended map. If this starts to fail, MONAI changed its rule."""
    window, dim, tokens = (4, 4, 4), 8, (2, 3, 3)
    layer = randomized(monai_swin.BasicLayer(dim, 1, 2, window, drop_path=[0.0], qkv_bias=True, downsample=None))
    block = layer.blocks[0]
    with torch.no_grad():
        block.norm1.bias.zero_()
    x = torch.randn(1, *tokens, dim, dtype=torch.double)
    extended = F.pad(x, (0, 0, 0, 1, 0, 1, 0, 2))
    at_size = block(x, None)
    on_full_window = block(extended, None)[:, :2, :3, :3]
    assert (at_size - on_full_window).abs().max() > 1e-3


def test_relative_position_index_is_monais():
    window = (2, 3, 4)
    attention = monai_swin.WindowAttention(8, 2, window)
    assert torch.equal(relative_position_index(window), attention.relative_position_index)


def test_encoder_is_one_graph_and_compiles_to_its_eager_function():
    config = Swin3dEncoderConfig(in_channels=1, embed_dim=6, num_heads=(1, 2, 2, 2), window_size=(2, 4, 4))
    net = Swin3dEncoder(config).eval()
    x = torch.randn(2, 1, 8, 16, 16)  # the deepest stages are smaller than a window: padded
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(net)(x)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    expected = net(x)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="eager", fullgraph=True)(x)
    for a, b in zip(compiled, expected):
        torch.testing.assert_close(a, b)


def test_shapes_and_config_round_trip():
    config = Swin3dEncoderConfig(embed_dim=6, num_heads=(1, 2, 2, 2), window_size=(2, 4, 4), patch_size=(1, 2, 2))
    assert Swin3dEncoderConfig.from_json(config.to_json()) == config
    outs = Swin3dEncoder(config)(torch.randn(1, 1, 16, 32, 32))
    expected = [(1, 6 * 2**i, 16 // 2**i, 16 // 2**i, 16 // 2**i) for i in range(5)]
    assert [tuple(o.shape) for o in outs] == expected
    assert config.total_stride == (16, 32, 32)
