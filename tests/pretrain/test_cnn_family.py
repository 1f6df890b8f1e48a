"""The cnn family: SparK-style masking keeps the holes closed through every stage; the MAE learns."""

from __future__ import annotations

import copy

import pytest
import torch

from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config
from pretrain.families.cnn import CnnMAE, at_resolution
from pretrain.masking import window_mask
from tests.pretrain.helpers import training_losses

PLAIN = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [8, 16, 32],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * 3,
        "strides": [[1, 1], [2, 2], [2, 2]],
        "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def residual_architecture(plain: dict = PLAIN) -> dict:
    """``plain``'s network with residual encoder stages (ResidualEncoderUNet)."""
    arch = copy.deepcopy(plain)
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    arch["arch_kwargs"]["n_blocks_per_stage"] = arch["arch_kwargs"].pop("n_conv_per_stage")
    return arch


def mae_for(architecture: dict, visible_norm: bool = False) -> CnnMAE:
    torch.manual_seed(0)
    network = build_stock_network(architecture, 1)
    return CnnMAE(network.get_submodule(cnn_encoder_config(architecture, 1)["load_root"]), 1, visible_norm).eval()


@pytest.mark.parametrize("visible_norm", [False, True], ids=["norm", "visible-norm"])
@pytest.mark.parametrize("architecture", [PLAIN, residual_architecture()], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_mask_stays_closed_through_every_stage(architecture, visible_norm):
    mask = window_mask(2, (8, 8), 2, 0.5, generator=torch.Generator().manual_seed(1))  # cells of total stride 4
    assert_holes_stay_closed(mae_for(architecture, visible_norm), torch.randn(2, 1, 32, 32), mask)


def assert_holes_stay_closed(mae: CnnMAE, imgs: torch.Tensor, mask: torch.Tensor) -> None:
    """Every stage of the encoder (2D or 3D) is zero in the hidden cells, re-zeroed at its own resolution, and
    blind to what the hidden pixels hold, while a change of the visible ones shows."""
    hidden = at_resolution(mask, imgs)
    other = torch.where(hidden, torch.randn_like(imgs) * 5, imgs)  # only hidden pixels change
    with torch.no_grad():
        features, other_features = mae.forward_encoder(imgs, mask), mae.forward_encoder(other, mask)
        touched = imgs.clone()
        touched[~hidden] += 1.0  # a visible change must show: the test can fail
        touched_features = mae.forward_encoder(touched, mask)
    assert len(features) == 3
    for f, g, t in zip(features, other_features, touched_features):
        assert torch.equal(f, g)
        holes = at_resolution(mask, f).expand_as(f)
        assert f[holes].abs().max() == 0  # re-zeroed at this stage's resolution
        assert f[~holes].abs().max() > 0 and not torch.equal(f, t)


@pytest.mark.parametrize("architecture", [PLAIN, residual_architecture()], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_visible_norm_takes_its_statistics_over_visible_positions_only(architecture):
    """SparK's sparse normalization: each norm's visible outputs have per-channel mean 0 and variance 1 (affine
    weights set to 1, biases to 0), its hidden ones are 0; the plain norms count the holes' zeros in."""
    imgs = torch.randn(2, 1, 32, 32)
    mask = window_mask(2, (8, 8), 2, 0.5, generator=torch.Generator().manual_seed(3))
    for visible_norm in (True, False):
        mae, outputs = mae_for(architecture, visible_norm), []
        for norm in (m for m in mae.encoder.modules() if isinstance(m, torch.nn.InstanceNorm2d)):
            torch.nn.init.ones_(norm.weight), torch.nn.init.zeros_(norm.bias)  # residual blocks init some to 0
            norm.register_forward_hook(lambda module, args, out: outputs.append(out.clone()))  # nonlin is in-place
        with torch.no_grad():
            mae.forward_encoder(imgs, mask)
        assert len(outputs) >= 6
        for out in outputs:
            holes = at_resolution(mask, out).expand_as(out)
            visible = torch.where(holes, torch.nan, out)
            mean, var = visible.nanmean(dim=(2, 3)), (visible**2).nanmean(dim=(2, 3)) - visible.nanmean(dim=(2, 3)) ** 2
            centred = mean.abs().max() < 1e-4 and (var - 1).abs().max() < 1e-2 and out[holes].abs().max() == 0
            assert centred == visible_norm
        assert mae._hidden is None  # outside a masked forward pass the norms are nnU-Net's own


def test_visible_norm_keeps_the_checkpoint_nnunets():
    plain, visible = mae_for(PLAIN), mae_for(PLAIN, visible_norm=True)
    assert plain.encoder.state_dict().keys() == visible.encoder.state_dict().keys()
    imgs = torch.randn(1, 1, 32, 32)
    with torch.no_grad():  # unmasked, as fine-tuning runs the encoder: the same function
        assert torch.equal(plain.encoder(imgs)[-1], visible.encoder(imgs)[-1])


def test_loss_goes_down_on_a_tiny_set():
    mae = mae_for(PLAIN).train()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    imgs = torch.stack([torch.sin(xx / (3 + i)) + torch.cos(yy / (4 + i)) for i in range(4)])[:, None]
    losses, pred = training_losses(mae, imgs, torch.optim.AdamW(mae.parameters(), lr=3e-3), steps=25, mask_ratio=0.6)
    assert pred.shape == imgs.shape
    assert sum(losses[-5:]) < 0.75 * sum(losses[:5]), losses


def test_loss_ignores_visible_pixels():
    mae = mae_for(PLAIN)
    imgs = torch.randn(1, 1, 32, 32)
    mask = window_mask(1, (8, 8), 2, 0.5, generator=torch.Generator().manual_seed(2))
    hidden = at_resolution(mask, imgs)
    perfect_where_hidden = torch.where(hidden, imgs, imgs + 10)
    assert mae.forward_loss(imgs, perfect_where_hidden, mask).item() == 0
    assert mae.forward_loss(imgs, imgs + 1, mask).item() == pytest.approx(1.0)
