"""SwinBlock computes what timm's SwinTransformerBlock computes, padded windows included, through torch's
fused attention whichever attention path timm's block takes."""

import copy

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock

from nnunetv2_vismae.architectures.swin_block import SwinBlock, use_swin_blocks
from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder


def timm_block(shift: int, dynamic_mask: bool, fused: bool) -> SwinTransformerBlock:
    torch.manual_seed(0)
    block = SwinTransformerBlock(
        dim=24,
        input_resolution=(14, 14),
        num_heads=3,
        window_size=7,
        shift_size=shift,
        always_partition=True,
        dynamic_mask=dynamic_mask,
    ).eval()
    with torch.no_grad():  # timm starts the table at ~0 and the bias at 0: make both matter
        block.attn.relative_position_bias_table.normal_()
        block.attn.qkv.bias.normal_()
    block.attn.fused_attn = fused
    return block


@pytest.mark.parametrize("size", [8, 14, 4, 10])  # padded to 14, exact, one window of 7, padded to 14
@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("fused", [False, True])  # timm's reference: its explicit softmax, or its fused path
def test_matches_timm_block_with_and_without_padding(size, shift, fused):
    reference = timm_block(shift, dynamic_mask=True, fused=fused)
    ours = use_swin_blocks(copy.deepcopy(reference))
    assert type(ours) is SwinBlock
    x = torch.randn(2, size, size, 24, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = ours(x), reference(x_ref)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    for (name, p), p_ref in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_fixed_mask_blocks_match_too():
    reference = timm_block(3, dynamic_mask=False, fused=False)
    ours = use_swin_blocks(copy.deepcopy(reference))
    x = torch.randn(1, 14, 14, 24)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_cached_masks_serve_inference_then_training():
    reference = timm_block(3, dynamic_mask=True, fused=False)
    ours = use_swin_blocks(copy.deepcopy(reference))
    x = torch.randn(1, 8, 8, 24)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    out = ours(x.requires_grad_())  # a mask made under inference mode cannot take part in autograd
    out.sum().backward()
    torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-5)


def test_encoder_uses_it_and_keeps_timm_names():
    encoder = SwinEncoder(embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4)
    blocks = [m for m in encoder.modules() if isinstance(m, SwinTransformerBlock)]
    assert blocks and all(type(m) is SwinBlock for m in blocks)
    assert "layers.0.blocks.0.attn.qkv.weight" in encoder.state_dict()


def test_attention_runs_in_torchs_fused_kernel_even_where_timms_switch_is_off(monkeypatch):
    reference = timm_block(3, dynamic_mask=True, fused=False)
    ours = use_swin_blocks(copy.deepcopy(reference))
    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def counting(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(q.shape), tuple(attn_mask.shape)))
        return fused(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    ours(torch.randn(2, 8, 8, 24))  # padded to 14 x 14: 4 windows of 49 tokens per image, 3 heads
    assert calls == [((8, 3, 49, 8), (8, 3, 49, 49))]  # bias and shift mask as one additive attn_mask
