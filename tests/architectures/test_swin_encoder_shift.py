"""The shift rule: with ``shift_single_window_stages`` the encoder computes what the original
Swin-MAE / VIS-MAE blocks compute at 224, without it what timm (and the Swin paper) compute."""

import pytest
import torch

from nnunetv2_vismae.architectures import SwinEncoder, SwinEncoderConfig, SwinUNet
from tests.architectures.original_swin import original_block, original_stages, shifted_window_mask

CONFIG = dict(
    in_channels=1,
    patch_size=4,
    embed_dim=24,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 3, 4),
    window_size=7,
    mlp_ratio=2.0,
    drop_path_rate=0.0,
    final_norm=False,  # the original encoder's: its last stage is not normed
)


def _encoder(shift_single_window_stages: bool, seed: int = 0) -> SwinEncoder:
    torch.manual_seed(seed)
    encoder = SwinEncoder(**CONFIG, shift_single_window_stages=shift_single_window_stages).eval()
    with torch.no_grad():  # timm starts the tables near 0 and the biases at 0: make both matter
        for name, p in encoder.named_parameters():
            if name.endswith(("relative_position_bias_table", "qkv.bias")):
                p.normal_()
    return encoder


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(2, 1, 224, 224)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_the_mask_of_a_7x7_map_with_shift_3_separates_the_wrapped_rows_and_columns():
    mask = shifted_window_mask(7, 7, window=7, shift=3)[0]
    region = [0 if r < 4 else 1 for r in range(7)]  # the roll brings rows/columns 4..6 from the far side
    labels = torch.tensor([2 * region[r] + region[c] for r in range(7) for c in range(7)])
    assert torch.equal(mask == 0, labels[:, None] == labels[None, :])


def test_a_shifted_one_window_block_matches_the_original_block():
    block = _encoder(True).layers[3].blocks[1]
    assert block.shift_size == (3, 3)
    x = torch.randn(2, 7, 7, 192)
    with torch.no_grad():
        torch.testing.assert_close(block(x), original_block(block, x, window=7, shift=3), rtol=1e-5, atol=1e-5)


def test_with_the_rule_every_stage_matches_the_original_encoder_at_224(image):
    encoder = _encoder(True)
    with torch.no_grad():
        ours, original = encoder(image), original_stages(encoder, image, window=7)
    assert [o.shape[-1] for o in ours] == [56, 28, 14, 7]
    for a, b in zip(ours, original):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_without_the_rule_the_last_stage_computes_another_function(image):
    """Issue 17: VIS-MAE weights in the timm-rule encoder differ at the deepest stage only."""
    shifted, timm_rule = _encoder(True), _encoder(False)
    timm_rule.load_state_dict(shifted.state_dict())
    with torch.no_grad():
        ours, original = timm_rule(image), original_stages(shifted, image, window=7)
    for a, b in zip(ours[:3], original[:3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert _relative_error(ours[3], original[3]) > 1e-2  # 100x the tolerance of a match


def test_the_rule_changes_only_the_single_window_stage():
    default, shifted = _encoder(False), _encoder(True)
    shifts = [[b.shift_size for b in stage.blocks] for stage in default.layers]
    assert shifts == [[(0, 0), (3, 3)]] * 3 + [[(0, 0), (0, 0)]]
    assert [[b.shift_size for b in stage.blocks] for stage in shifted.layers] == [[(0, 0), (3, 3)]] * 4
    assert [[b.window_size for b in s.blocks] for s in default.layers] == [
        [b.window_size for b in s.blocks] for s in shifted.layers
    ]
    assert default.state_dict().keys() == shifted.state_dict().keys()


def test_without_the_final_norm_the_last_stage_is_raw_and_there_is_no_norm_tensor(image):
    plain, normed = _encoder(False), SwinEncoder(**{**CONFIG, "final_norm": True}).eval()
    assert not any(k.startswith("norm.") for k in plain.state_dict())
    assert set(normed.state_dict()) - set(plain.state_dict()) == {"norm.weight", "norm.bias"}
    normed.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        raw, ours = normed.forward_intermediates(image, norm=False, intermediates_only=True), plain(image)
    for a, b in zip(ours, raw):
        torch.testing.assert_close(a, b)
    assert SwinEncoderConfig().final_norm is True and SwinEncoderConfig.from_json({}).final_norm is True


def test_the_rule_is_part_of_the_config_with_todays_default():
    assert SwinEncoderConfig().shift_single_window_stages is False
    assert SwinEncoderConfig.from_json({"embed_dim": 24}).shift_single_window_stages is False  # older configs
    config = SwinEncoderConfig(**CONFIG, shift_single_window_stages=True)
    assert config.to_json()["shift_single_window_stages"] is True
    assert SwinEncoder.from_config(config).config == config
    network = SwinUNet(1, 2, encoder={k: v for k, v in config.to_json().items() if k != "in_channels"})
    assert network.encoder.layers[3].blocks[1].shift_size == (3, 3)
