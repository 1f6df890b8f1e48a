"""Data sources: PNG folders, DICOM, NIfTI volumes, nnU-Net preprocessed datasets, the weighted mixture."""

from __future__ import annotations

import numpy as np
import pytest

from pretrain.data.files import FileSource
from pretrain.data.mixture import PatchDataset
from pretrain.data.nnunet import NnUNetSource
from pretrain.data import files as files_module
from pretrain.data.files import discover_files
from pretrain.data.mixture import random_patch
from nnunetv2_vismae.io.normalization import Normalization
from pretrain.errors import PretrainUserError

from tests.pretrain.helpers import write_nnunet_dataset


def test_png_folder_gray_zscore_padding_and_deterministic_patches(png_folder, tmp_path):
    files = discover_files([png_folder])
    assert len(files) == 4  # found recursively
    source = FileSource("pngs", files, cache_dir=str(tmp_path / "out"))
    assert len(source) == 4 and source.num_channels == 1
    for i in range(4):
        image = source.load_slice(i)
        assert image.ndim == 3 and image.shape[0] == 1  # RGB became one gray channel
        assert abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
    # the RGB image's gray channel is the luminance of its channels
    rgb = files_module.read_image(files[0])
    expected = Normalization()(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[0]
    np.testing.assert_allclose(source.load_slice(0)[0], expected, atol=1e-5)

    dataset = PatchDataset([source], patch_size=32, seed=3)
    small = source.load_slice(source.files.index(next(f for f in files if "gray1" in f)))  # 24 x 30
    padded = random_patch(small, 32, np.random.default_rng(0))
    assert padded.shape == (1, 32, 32) and np.isclose(padded.sum(), small.sum(), atol=1e-3)  # zero-padded, whole
    for k in range(12):
        patch = dataset[k]
        assert tuple(patch.shape) == (1, 32, 32)
        assert np.array_equal(patch.numpy(), dataset[k].numpy())  # a pure function of the index
    assert not np.array_equal(dataset[0].numpy(), dataset[1].numpy())


def test_manifest_cached_and_keyed_by_input_list(png_folder, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    first = FileSource("pngs", discover_files([png_folder]), cache_dir=out)

    def no_header_reads(path):
        raise AssertionError("the cached manifest should have been used")

    monkeypatch.setattr(files_module, "screen_header", no_header_reads)
    again = FileSource("pngs", discover_files([png_folder]), cache_dir=out)
    assert again.manifest_path == first.manifest_path and len(again) == len(first)

    monkeypatch.undo()
    from PIL import Image

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(f"{png_folder}/new.png")
    changed = FileSource("pngs", discover_files([png_folder]), cache_dir=out)
    assert changed.manifest_path != first.manifest_path and len(changed) == 5


def test_dicom_file_with_ct_normalization(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    path = str(tmp_path / "slice.dcm")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 20, 30, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    stored = (np.arange(600).reshape(20, 30) * 3).astype(np.uint16)  # HU = stored - 1024 in [-1024, 773]
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)

    norm = Normalization("ct", (-500.0, 500.0), (0.0, 250.0))
    source = FileSource("dicom", discover_files([str(tmp_path)]), normalization=norm, cache_dir=str(tmp_path / "o"))
    image = source.load_slice(0)
    hu = stored.astype(np.float32) - 1024
    np.testing.assert_allclose(image[0], np.clip(hu, -500, 500) / 250.0, atol=1e-5)


def test_nifti_volume_slices_along_all_axes(tmp_path):
    import SimpleITK as sitk

    volume = np.random.default_rng(0).normal(5, 2, size=(5, 6, 7)).astype(np.float32)  # Z, Y, X
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "vol.nii.gz"))
    files = discover_files([str(tmp_path)])
    source = FileSource("vol", files, axis="all", cache_dir=str(tmp_path / "o"))
    assert len(source) == 5 + 6 + 7
    normalized = (volume - volume.mean()) / volume.std()  # per volume, as nnU-Net's z-score
    np.testing.assert_allclose(source.load_slice(2)[0], normalized[2], atol=1e-4)  # axis 0
    np.testing.assert_allclose(source.load_slice(5 + 3)[0], normalized[:, 3], atol=1e-4)  # axis 1
    np.testing.assert_allclose(source.load_slice(11 + 6)[0], normalized[:, :, 6], atol=1e-4)  # axis 2
    assert len(FileSource("vol", files, axis="1", cache_dir=str(tmp_path / "o"))) == 6


def test_nnunet_preprocessed_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    _, cases = write_nnunet_dataset(str(tmp_path))
    source = NnUNetSource("1", "2d", "nnUNetPlans")
    assert len(source) == 3 + 2 and source.num_channels == 1
    np.testing.assert_array_equal(source.load_slice(1), cases["case0"][:, 1])  # unchanged: already normalized
    np.testing.assert_array_equal(source.load_slice(4), cases["case1"][:, 1])
    summary = source.summary()
    assert summary["spacing"] == [0.8, 0.8] and summary["normalization"]["normalization_schemes"] == [
        "ZScoreNormalization"
    ]
    patch = PatchDataset([source], patch_size=32)[0]
    assert tuple(patch.shape) == (1, 32, 32)

    with pytest.raises(PretrainUserError, match="Configuration 3d_fullres"):
        NnUNetSource("1", "3d_fullres")
    with pytest.raises(PretrainUserError, match="Found no dataset folder for dataset 7"):
        NnUNetSource("7")
    monkeypatch.delenv("nnUNet_preprocessed")
    with pytest.raises(PretrainUserError, match="nnUNet_preprocessed"):
        NnUNetSource("1")


class _Const:
    """A fake source whose slices are filled with its id."""

    num_channels = 1

    def __init__(self, value, n):
        self.value, self.n, self.name = value, n, f"const{value}"

    def __len__(self):
        return self.n

    def load_slice(self, i):
        return np.full((1, 40, 40), self.value * 100 + i, np.float32)


def test_mixture_weights_and_rank_shards():
    sources = [_Const(1, 10), _Const(2, 10)]
    only_first = PatchDataset(sources, 32, weights=[1.0, 0.0])
    assert all(only_first[k][0, 0, 0] // 100 == 1 for k in range(20))
    mixed = PatchDataset(sources, 32, weights=[3.0, 1.0])
    share = np.mean([float(mixed[k][0, 0, 0] // 100 == 1) for k in range(400)])
    assert 0.68 < share < 0.82
    seen = [{int(PatchDataset(sources, 32, rank=r, world_size=2)[k][0, 0, 0]) for k in range(200)} for r in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # ranks read disjoint shards


def test_shares_screened_by_each_rank_merge_into_the_whole_manifest(png_folder, tmp_path):
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(png_folder, folder)
    (folder / "empty.png").write_bytes(b"")  # skipped: the merge keeps the skipped files too
    files = discover_files([str(folder)])[::-1]  # any order is kept
    shares = [files_module.build_manifest(files[rank::3]) for rank in range(3)]  # 5 files over 3 ranks
    assert files_module.merge_manifests(shares, files) == files_module.build_manifest(files)
    assert [len(s["files"]) + len(s["skipped"]) for s in shares] == [2, 2, 1]
