"""The swin3d family: hidden 3D blocks of patches become the mask token before the stages, the loss sees the
hidden voxels only, the MAE learns on tiny volumes; its flags and their defaults (SwinUNETR's), and the 2D
swin family's unchanged."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_vismae.architectures.swin3d_encoder import Swin3dEncoderConfig
from pretrain.config import PretrainConfig
from pretrain.errors import PretrainUserError
from pretrain.families.swin3d import Swin3dFamily, Swin3dMAE
from pretrain.masking import window_mask
from tests.pretrain.helpers import parse, tiny_volumes, training_losses, write_nnunet_dataset, write_volume_dataset

# 2 stages (total stride 8 per axis), anisotropic patches of 1 x 2 x 2 voxels
TINY_3D = Swin3dEncoderConfig(1, (1, 2, 2), 12, (1, 1), (3, 3), (2, 4, 4))


def mae(norm_pix_loss: bool = False) -> Swin3dMAE:
    torch.manual_seed(0)
    return Swin3dMAE(TINY_3D, norm_pix_loss).eval()


def voxel_mask(model: Swin3dMAE, mask: torch.Tensor) -> torch.Tensor:
    """B x d x h x w patch mask -> B x 1 x D x H x W voxel mask."""
    for axis, p in enumerate(model.patch_size, start=1):
        mask = mask.repeat_interleave(p, axis)
    return mask.unsqueeze(1)


def test_the_mask_token_replaces_exactly_the_hidden_patches():
    model = mae()
    imgs = torch.randn(2, 1, 8, 16, 16)
    mask = window_mask(2, (8, 8, 8), (2, 2, 4), 0.5, generator=torch.Generator().manual_seed(1))
    hidden = voxel_mask(model, mask)
    with torch.no_grad():
        features = model.forward_encoder(imgs, mask)
        other = model.forward_encoder(torch.where(hidden, torch.randn_like(imgs) * 5, imgs), mask)
        touched = imgs.clone()
        touched[~hidden] += 1.0  # a visible change must show: the test can fail
        touched_features = model.forward_encoder(touched, mask)
    assert [f.shape[1:] for f in features] == [(12, 8, 8, 8), (24, 4, 4, 4), (48, 2, 2, 2)]
    for f, g, t in zip(features, other, touched_features):
        assert torch.equal(f, g) and not torch.equal(f, t)  # hidden voxels reach no stage
    token = F.layer_norm(model.mask_token.flatten(), (12,))  # the embedding is returned layer-normed
    embedded = features[0].permute(0, 2, 3, 4, 1)
    assert torch.allclose(embedded[mask], token.expand(int(mask.sum()), 12), atol=1e-6)
    assert not torch.isclose(embedded[~mask], token, atol=1e-3).all(-1).any()  # no visible patch is the token


def test_the_loss_sees_hidden_voxels_only():
    model = mae()
    imgs = torch.randn(1, 1, 8, 16, 16)
    mask = window_mask(1, (8, 8, 8), 2, 0.5, generator=torch.Generator().manual_seed(2))
    target = model.patchify(imgs)
    perfect_where_hidden = torch.where(mask.flatten(1)[..., None], target, target + 10)
    assert model.forward_loss(imgs, perfect_where_hidden, mask).item() == 0
    assert model.forward_loss(imgs, target + 1, mask).item() == pytest.approx(1.0)


@pytest.mark.parametrize("norm_pix_loss", [False, True], ids=["pixels", "norm-pix"])
def test_a_reconstruction_keeps_the_visible_voxels_and_predicts_the_hidden(norm_pix_loss):
    model = mae(norm_pix_loss)
    imgs = torch.randn(2, 1, 8, 16, 16)
    assert torch.equal(model.unpatchify(model.patchify(imgs), (8, 8, 8)), imgs)
    mask = window_mask(2, (8, 8, 8), 2, 0.5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, pred = model(imgs, mask)
        recon, pixel_mask = model.reconstruct(imgs, mask, pred)
    assert pred.shape == (2, 512, 4) and torch.equal(pixel_mask, voxel_mask(model, mask))
    assert torch.equal(recon[~pixel_mask.expand_as(imgs)], imgs[~pixel_mask.expand_as(imgs)])
    assert not torch.isclose(recon[pixel_mask.expand_as(imgs)], imgs[pixel_mask.expand_as(imgs)]).all()


def test_the_loss_falls_on_tiny_volumes():
    model = mae().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, _ = training_losses(model, tiny_volumes(), optimizer, steps=12, mask_ratio=0.5, grid=(8, 8, 8))
    assert sum(losses[-3:]) < 0.75 * sum(losses[:3]), losses


def options(*flags: str):
    return PretrainConfig.from_args(parse(["-o", "unused", "--encoder", *flags])).family_options


def test_swin3d_fills_swinunetrs_defaults_and_takes_one_value_or_one_per_axis():
    default = options("swin3d", "-d", "3")
    assert (default.embed_dim, default.encoder_patch, default.window) == (48, (2, 2, 2), (7, 7, 7))
    assert default.mask_block == (8, 8, 8) and default.plans_dataset == "3"  # half a cell of the 4th stage
    given = options("swin3d", "-i", "x", "--preprocess-like", "5", "--window", "2", "4", "4", "--encoder-patch", "1")
    assert (given.window, given.encoder_patch, given.plans_dataset) == ((2, 4, 4), (1, 1, 1), "5")
    assert options("swin3d", "-d", "3", "--depths", "2", "2", "--heads", "3", "6").mask_block == (2, 2, 2)
    with pytest.raises(PretrainUserError, match="^--mask-block takes one side or one per axis Z Y X for volumes"):
        options("swin3d", "-d", "3", "--mask-block", "2", "4")


def test_the_2d_swin_family_keeps_its_defaults_and_one_side():
    swin = options("swin")
    assert (swin.embed_dim, swin.encoder_patch, swin.window, swin.mask_block) == (96, 4, 7, 4)
    with pytest.raises(PretrainUserError, match="^--window takes one side for the 2D swin family, got 3 values.$"):
        options("swin", "--window", "7", "7", "7")


def test_the_default_patch_is_the_plans_rounded_down_to_the_total_stride(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    folder, _ = write_volume_dataset(str(tmp_path), shapes=((1, 8, 8, 8),))
    write_nnunet_dataset(str(tmp_path), dataset_id=1)
    plans_file = os.path.join(folder, "nnUNetPlans.json")
    with open(plans_file) as f:
        plans = json.load(f)
    plans["configurations"]["3d_fullres"]["patch_size"] = [20, 72, 100]
    with open(plans_file, "w") as f:
        json.dump(plans, f)
    geometry = Swin3dFamily.image_geometry
    volumes = ["-d", "3", "-c", "3d_fullres"]
    assert geometry(options("swin3d", *volumes)) == (3, [32, 64, 96])  # stride 32; at least one stride on Z
    assert geometry(options("swin3d", *volumes, "--encoder-patch", "1", "2", "2")) == (3, [16, 64, 96])
    with pytest.raises(PretrainUserError, match=r"^Configuration '2d' of .* is not 3D; --encoder swin3d pretrains"):
        geometry(options("swin3d", "-d", "1", "-c", "2d"))
    with pytest.raises(PretrainUserError, match="^--encoder swin3d follows a dataset's plans"):
        geometry(options("swin3d", "--pack", "some.pack"))
