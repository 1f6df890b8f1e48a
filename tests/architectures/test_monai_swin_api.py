"""``swin3d_encoder.py`` computes MONAI's SwinTransformer(spatial_dims=3) function from MONAI's state dict
without importing MONAI; each test here names a part of MONAI that our mapping assumes, so a new MONAI
fails loudly instead of converting into something else. pyproject.toml's test extra keeps MONAI at the
versions these tests passed with."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

from nnunetv2_vismae.architectures.swin3d_encoder import (
    MERGE_OFFSETS,
    PatchMerging3d,
    Swin3dEncoder,
    Swin3dEncoderConfig,
    monai_to_ours,
)

monai = pytest.importorskip("monai", reason="MONAI is a test dependency: pip install -e .[test]")
swin_unetr = pytest.importorskip("monai.networks.nets.swin_unetr")
warnings.filterwarnings("ignore", category=FutureWarning)

MONAI_MERGING = "monai-1.4" if tuple(int(v) for v in monai.__version__.split(".")[:2]) < (1, 5) else "monai-1.5"
CONFIG = Swin3dEncoderConfig(merge_offsets=MONAI_MERGING, embed_dim=6, num_heads=(1, 2, 2, 2), window_size=(2, 3, 3))


def changed(what: str) -> str:
    return (
        f"MONAI {monai.__version__} changed {what}, which nnunetv2_vismae/architectures/swin3d_encoder.py's "
        "mapping of MONAI's SwinTransformer relies on: adapt the mapping, or keep MONAI at the bound in pyproject.toml"
    )


def monai_encoder(**kwargs):
    return swin_unetr.SwinTransformer(
        in_chans=CONFIG.in_channels,
        embed_dim=CONFIG.embed_dim,
        window_size=CONFIG.window_size,
        patch_size=CONFIG.patch_size,
        depths=CONFIG.depths,
        num_heads=CONFIG.num_heads,
        spatial_dims=3,
        **kwargs,
    )


def test_the_constructor_takes_what_we_pass():
    parameters = inspect.signature(swin_unetr.SwinTransformer).parameters
    expected = (
        "in_chans",
        "embed_dim",
        "window_size",
        "patch_size",
        "depths",
        "num_heads",
        "spatial_dims",
        "downsample",
    )
    missing = [name for name in expected if name not in parameters]
    assert not missing, changed(f"SwinTransformer's arguments ({', '.join(missing)} gone)")
    assert parameters["downsample"].default == "merging", changed("SwinTransformer's default downsample")


def test_the_state_dict_renames_onto_ours_key_for_key_and_shape_for_shape():
    theirs = monai_encoder().state_dict()
    assert any(k.endswith("relative_position_index") for k in theirs), changed(
        "relative_position_index (no longer in the state dict; monai_to_ours drops it)"
    )
    renamed = {k: tuple(v.shape) for k, v in monai_to_ours(theirs).items()}
    ours = {k: tuple(v.shape) for k, v in Swin3dEncoder(CONFIG).state_dict().items()}
    assert renamed == ours, changed(f"SwinTransformer's state dict: {sorted(set(renamed) ^ set(ours))}")


@pytest.mark.parametrize("downsample, offsets", [("merging", MONAI_MERGING), ("mergingv2", "row-major")])
def test_patch_merging_concatenates_the_voxels_in_our_order(downsample, offsets):
    dim = 2
    theirs = swin_unetr.MERGING_MODE[downsample](dim, spatial_dims=3)
    ours = PatchMerging3d(dim, MERGE_OFFSETS[offsets])
    for merging in (theirs, ours):
        merging.norm, merging.reduction = nn.Identity(), nn.Identity()  # the concatenation alone
    x = torch.arange(2 * 4 * 4 * 6 * dim, dtype=torch.float).view(2, 4, 4, 6, dim)  # every voxel distinct
    assert torch.equal(ours(x), theirs(x)), changed(f"the order in which PatchMerging ({downsample!r}) concatenates")


def test_forward_returns_the_embedding_and_every_merged_stage_layer_normed():
    x = torch.randn(1, 1, 16, 24, 24)
    outs = monai_encoder()(x, normalize=True)
    assert len(outs) == len(CONFIG.depths) + 1, changed("what SwinTransformer.forward returns (no longer 5 maps)")
    embedding = monai_encoder().patch_embed
    tokens = embedding.proj if hasattr(embedding, "proj") else None
    assert isinstance(tokens, nn.Conv3d), changed("PatchEmbed (no longer a Conv3d named proj)")
    for out in outs:  # normalize: zero mean, unit variance over channels, no parameters
        torch.testing.assert_close(out.mean(1), torch.zeros_like(out.mean(1)), atol=1e-5, rtol=0)
