"""``--preprocess-like D``: unlabeled volumes preprocessed exactly as nnU-Net preprocesses dataset D's cases,
then pretrained on with a 3D encoder; checked against nnU-Net's own preprocessing of the same files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest

from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from pretrain.cli import main
from pretrain.data.preprocess_like import CACHE
from tests.conftest import nnunet_env, run, set_nnunet_folders

SPACINGS = ((2.0, 1.0, 1.0), (2.5, 0.9, 0.9), (2.0, 1.1, 1.0))  # (Z, Y, X): the cases are resampled differently


def write_raw_volumes(raw_root: Path, dataset_id: int = 5) -> Path:
    """Three 16 x 32 x 32 NIfTI volumes with a bright ball (label 1), of different spacings."""
    import SimpleITK as sitk

    folder = raw_root / f"Dataset{dataset_id:03d}_Balls"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(dataset_id)
    zz, yy, xx = np.mgrid[:16, :32, :32]
    for i, spacing in enumerate(SPACINGS):
        label = ((zz - 8) ** 2 * 4 + (yy - 14 - i) ** 2 + (xx - 16) ** 2 < 64).astype(np.uint8)
        image = (100 + 80 * label + rng.normal(0, 10, label.shape)).astype(np.float32)
        for array, path in ((image, f"imagesTr/case_{i:03d}_0000.nii.gz"), (label, f"labelsTr/case_{i:03d}.nii.gz")):
            written = sitk.GetImageFromArray(array)
            written.SetSpacing(spacing[::-1])  # SimpleITK's order is X, Y, Z
            sitk.WriteImage(written, str(folder / path))
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MR"},
                "labels": {"background": 0, "ball": 1},
                "numTraining": len(SPACINGS),
                "file_ending": ".nii.gz",
            }
        )
    )
    return folder


@pytest.mark.slow  # nnUNetv2_plan_and_preprocess
def test_preprocess_like_equals_nnunets_preprocessing_and_pretrains_a_3d_encoder(tmp_path, monkeypatch):
    env = nnunet_env(tmp_path / "nnunet")
    raw = write_raw_volumes(Path(env["nnUNet_raw"]))
    run(["nnUNetv2_plan_and_preprocess", "-d", "5", "-c", "3d_fullres", "-np", "1", "-npfp", "1"], env)
    set_nnunet_folders(monkeypatch, env)
    unlabeled = tmp_path / "unlabeled"
    shutil.copytree(raw / "imagesTr", unlabeled)
    (unlabeled / "broken.nii.gz").write_bytes(b"not a volume")
    out = tmp_path / "run"
    argv = ["--encoder", "cnn", "--plans-of", "5", "-c", "3d_fullres", "-i", str(unlabeled), "--preprocess-like", "5"]
    argv += ["-o", str(out), "--batch-size", "2", "--workers", "0", "--precision", "fp32"]
    argv += ["--patch-size", "8", "16", "16", "--max-unusable", "0.3", "-device", "cpu"]
    assert main([*argv, "--steps", "1"]) == 0

    (cache,) = (out / CACHE).iterdir()
    ours = sorted(cache.glob("*.b2nd"))
    ours = [p for p in ours if not p.name.endswith("_seg.b2nd")]
    assert len(ours) == 3  # the broken file is counted as unusable, not preprocessed
    theirs = Path(env["nnUNet_preprocessed"]) / "Dataset005_Balls" / "nnUNetPlans_3d_fullres"
    expected = [blosc2.open(str(theirs / f"case_{i:03d}.b2nd"))[:] for i in range(3)]
    found = [blosc2.open(str(p))[:] for p in ours]
    for array in expected:  # each of nnU-Net's cases is one of ours, value for value
        assert any(a.shape == array.shape and np.array_equal(a, array) for a in found)
    assert len({a.shape for a in expected}) > 1  # the spacings made nnU-Net resample the cases differently

    checkpoint = read_encoder_checkpoint(out / "encoder.safetensors")
    assert checkpoint.metadata["spatial_dims"] == 3
    (source,) = checkpoint.metadata["data_sources"]["sources"]
    assert source["type"] == "preprocessed_like" and source["preprocessed_like"] == "Dataset005_Balls"
    assert checkpoint.metadata["data_sources"]["unusable_files"] == {"header": 1}

    modified = {p: p.stat().st_mtime_ns for p in ours}
    assert main([*argv, "--steps", "2"]) == 0  # resumed: nothing preprocessed again
    assert {p: p.stat().st_mtime_ns for p in ours} == modified


@pytest.mark.parametrize(
    ("dataset_json", "expected"),
    [
        (None, "has no dataset.json; run nnUNetv2_plan_and_preprocess -d 3 first."),
        ({"channel_names": {"0": "T1", "1": "T2"}}, "--preprocess-like takes datasets with one input channel;"),
    ],
)
def test_preprocess_like_refuses_what_it_cannot_follow(dataset_json, expected, tmp_path, monkeypatch, capsys):
    from tests.pretrain.helpers import write_volume_dataset

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    folder, _ = write_volume_dataset(str(tmp_path / "preprocessed"))
    if dataset_json is not None:
        Path(folder, "dataset.json").write_text(json.dumps({**dataset_json, "file_ending": ".nii.gz"}))
    (tmp_path / "unlabeled").mkdir()
    (tmp_path / "unlabeled" / "a.nii.gz").write_bytes(b"")
    argv = ["--encoder", "cnn", "-c", "3d_fullres", "--plans-of", "3", "-i", str(tmp_path / "unlabeled")]
    assert main([*argv, "--preprocess-like", "3", "-o", str(tmp_path / "run"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
