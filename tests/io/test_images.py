"""Reading images: float NIfTI keeps NaN and Inf (SimpleITK reads them as 0) and is laid out as SimpleITK does."""

from __future__ import annotations

import numpy as np
import pytest

from nnunetv2_vismae.io.images import read_image


def _sitk_read(path) -> np.ndarray:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    return SimpleITKIO().read_images([str(path)])[0]


@pytest.mark.parametrize("shape", [(4, 40, 44), (40, 44), (1, 40, 44)])
def test_float_nifti_keeps_nan_and_inf(shape, tmp_path):
    import SimpleITK as sitk

    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    image = sitk.GetImageFromArray(volume)
    if volume.ndim == 3:  # an oblique, anisotropic volume: the pixel layout must not depend on it
        image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
        image.SetSpacing((0.7, 0.8, 2.0))
    sitk.WriteImage(image, str(tmp_path / "clean.nii.gz"))
    assert np.array_equal(read_image(str(tmp_path / "clean.nii.gz")), _sitk_read(tmp_path / "clean.nii.gz"))

    broken = volume.copy()
    broken.flat[[3, 50]] = np.nan, np.inf
    sitk.WriteImage(sitk.GetImageFromArray(broken), str(tmp_path / "broken.nii"))
    assert np.isfinite(_sitk_read(tmp_path / "broken.nii")).all()  # what SimpleITK makes of it
    read = read_image(str(tmp_path / "broken.nii"))
    assert read.shape == (1,) * (4 - broken.ndim) + broken.shape
    assert np.array_equal(read.reshape(broken.shape), broken, equal_nan=True)


def test_scaled_integer_nifti_is_read_as_before(tmp_path):
    import nibabel

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)  # nibabel's X, Y, Z
    nifti = nibabel.Nifti1Image(data, np.eye(4))
    nifti.header.set_slope_inter(0.5, 10)
    nibabel.save(nifti, str(tmp_path / "scaled.nii.gz"))
    read = read_image(str(tmp_path / "scaled.nii.gz"))
    assert np.array_equal(read, _sitk_read(tmp_path / "scaled.nii.gz")) and read[0, 0, 0, 1] == 10 + 0.5 * 4 * 5
