"""``swin_block.py`` builds on parts of timm's Swin that are not public API; each test here names
the part that changed, so a new timm fails loudly instead of silently skipping our block or
computing something else. pyproject.toml keeps timm at the versions these tests passed with."""

import inspect

import pytest
import timm
import torch
from timm.models import swin_transformer
from timm.models.swin_transformer import SwinTransformerBlock, SwinTransformerStage

from nnunetv2_vismae.architectures.swin_block import SwinBlock, use_swin_blocks

# what SwinBlock reads or overrides, by object
BLOCK_ATTRIBUTES = ("_attn", "get_attn_mask", "shift_size", "window_size", "dynamic_mask", "attn_mask", "attn")
ATTENTION_ATTRIBUTES = (
    "_get_rel_pos_bias",
    "scale",
    "num_heads",
    "qkv",
    "attn_drop",
    "proj",
    "proj_drop",
)


def changed(what: str) -> str:
    return (
        f"timm {timm.__version__} changed {what}, which nnunetv2_vismae/architectures/swin_block.py relies "
        "on: adapt SwinBlock to it, or keep timm at the bound in pyproject.toml"
    )


def block(shift: int = 2, dynamic_mask: bool = True) -> SwinTransformerBlock:
    return SwinTransformerBlock(
        dim=8,
        input_resolution=(8, 8),
        num_heads=2,
        window_size=4,
        shift_size=shift,
        always_partition=True,
        dynamic_mask=dynamic_mask,
    )


def test_the_attributes_swin_block_uses_are_there():
    reference = block()
    missing = [f"SwinTransformerBlock.{name}" for name in BLOCK_ATTRIBUTES if not hasattr(reference, name)]
    missing += [f"WindowAttention.{name}" for name in ATTENTION_ATTRIBUTES if not hasattr(reference.attn, name)]
    missing += [
        f"swin_transformer.{name}"
        for name in ("window_partition", "window_reverse")
        if not hasattr(swin_transformer, name)
    ]
    assert not missing, changed(", ".join(missing) + " (gone)")
    assert isinstance(reference.window_size, tuple) and isinstance(reference.shift_size, tuple), changed(
        "SwinTransformerBlock.window_size / shift_size (no longer tuples)"
    )


def test_the_relative_position_bias_keeps_its_shape():
    attention = block().attn
    area = 4 * 4
    assert tuple(attention._get_rel_pos_bias().shape) == (1, 2, area, area), changed(
        "WindowAttention._get_rel_pos_bias() (no longer 1 x heads x N x N)"
    )


@pytest.mark.parametrize("name", ["always_partition", "dynamic_mask"])
def test_decoder_stages_can_still_ask_for_fixed_windows_and_per_size_masks(name):
    assert name in inspect.signature(SwinTransformerStage).parameters, changed(f"SwinTransformerStage({name}=...)")


def test_the_class_swap_turns_blocks_into_ours_and_forward_still_goes_through_attn(monkeypatch):
    stage = SwinTransformerStage(
        8, 8, (8, 8), depth=2, downsample=False, num_heads=2, window_size=4, always_partition=True, dynamic_mask=True
    )
    assert [type(b) for b in stage.blocks] == [SwinTransformerBlock] * 2, changed(
        "the class of the blocks SwinTransformerStage builds (use_swin_blocks swaps exact ones only)"
    )
    use_swin_blocks(stage)
    assert all(type(b) is SwinBlock for b in stage.blocks), changed("SwinTransformerBlock's instances (__class__)")
    calls = []
    ours = SwinBlock._attn
    monkeypatch.setattr(SwinBlock, "_attn", lambda self, x: calls.append(tuple(x.shape)) or ours(self, x))
    stage(torch.randn(1, 6, 6, 8))
    assert calls == [(1, 6, 6, 8)] * 2, changed("SwinTransformerBlock.forward (it no longer calls self._attn)")


def test_get_attn_mask_takes_the_padded_map():
    reference = block(dynamic_mask=True)
    mask = reference.get_attn_mask(torch.zeros(1, 8, 8, 8))
    assert mask is not None and tuple(mask.shape) == (4, 16, 16), changed(
        "SwinTransformerBlock.get_attn_mask(x) (windows x N x N for the padded map)"
    )
