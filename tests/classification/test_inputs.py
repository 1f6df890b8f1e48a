"""Inputs are normalized as the checkpoint was pretrained, and resized without distortion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.classification.inputs import (
    normalization_from_checkpoint,
    normalize,
    resize_square,
)


def test_pretraining_normalizations_map_to_input_normalizations():
    assert normalization_from_checkpoint({"scheme": "zscore", "per_source": [{"scheme": "zscore"}]}) == {
        "scheme": "zscore"
    }
    ct = {"scheme": "ct", "ct_clip": [-1000, 1000], "ct_stats": None, "applied": "..."}
    assert normalization_from_checkpoint({"scheme": "ct", "per_source": [ct, ct]}) == {
        "scheme": "ct",
        "ct_clip": [-1000, 1000],
        "ct_stats": None,
    }
    nnunet = {
        "scheme": "nnunet",
        "normalization_schemes": ["CTNormalization"],
        "foreground_intensity_properties_per_channel": {
            "0": {"percentile_00_5": -100, "percentile_99_5": 300, "mean": 50, "std": 20}
        },
    }
    assert normalization_from_checkpoint(nnunet) == {"scheme": "ct", "ct_clip": [-100, 300], "ct_stats": [50, 20]}
    folded = {"scheme": "imagenet_rgb_folded", "folded_mean": 0.449, "folded_std": 0.226}
    assert normalization_from_checkpoint(folded) == {"scheme": "unit_range", "mean": [0.449], "std": [0.226]}
    with pytest.raises(ClassificationError, match="different normalizations"):
        normalization_from_checkpoint({"scheme": "mixed", "per_source": [{"scheme": "zscore"}, ct]})


def test_normalize_applies_the_scheme_and_repeats_channels():
    gray = np.array([[[[-2000.0, 0.0], [500.0, 2000.0]]]], np.float32)
    ct = normalize(gray, {"scheme": "ct", "ct_clip": [-1000, 1000], "ct_stats": [0, 500]}, channels=2)
    assert ct.shape == (2, 1, 2, 2) and ct[1, 0].tolist() == [[-2.0, 0.0], [1.0, 2.0]]
    unit = normalize(gray, {"scheme": "unit_range", "mean": [0.5], "std": [0.25]}, channels=1)
    assert unit.min() == -2.0 and unit.max() == 2.0


def test_resize_pads_to_a_square_with_the_background():
    plane = torch.zeros(1, 4, 8)
    plane[:, :, 2:6] = 1.0
    out = resize_square(plane, 8)
    assert out.shape == (1, 8, 8)
    assert out[0, 0].abs().max() == 0 and out[0, 4, 3:5].min() > 0.9  # padded rows above, bar kept


def test_volumes_give_the_chosen_slice_normalized_per_volume(tmp_path):
    import SimpleITK as sitk

    from nnunetv2_vismae.classification.inputs import InputSpec, load_input

    volume = np.zeros((3, 8, 8), np.float32)
    volume[2] = 10.0  # only the last slice is bright
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "v.nii.gz"))
    spec = InputSpec(size=8, in_channels=1, normalization={"scheme": "zscore"}, slice_axis=0, slice_index=2)
    bright, middle = (
        load_input(str(tmp_path / "v.nii.gz"), spec),
        load_input(str(tmp_path / "v.nii.gz"), InputSpec(8, 1, {"scheme": "zscore"})),
    )
    assert bright.mean() > 1.0 and middle.mean() < 0  # z-scored over the volume, not the slice
    with pytest.raises(ClassificationError, match="slice 5 along axis 0 does not exist"):
        load_input(str(tmp_path / "v.nii.gz"), InputSpec(8, 1, {"scheme": "zscore"}, 0, 5))


def test_an_image_with_nan_is_refused_with_one_sentence(tmp_path):
    import SimpleITK as sitk

    from nnunetv2_vismae.classification.inputs import InputSpec, load_input

    volume = np.ones((3, 8, 8), np.float32)
    volume[1, 2, :3] = np.nan  # SimpleITK would read these as 0 and train on them
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "v.nii.gz"))
    with pytest.raises(ClassificationError, match=r"^Image .*v.nii.gz has 3 NaN or Inf pixels; fix or remove it.$"):
        load_input(str(tmp_path / "v.nii.gz"), InputSpec(8, 1, {"scheme": "zscore"}))
