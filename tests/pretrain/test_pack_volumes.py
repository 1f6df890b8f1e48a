"""``nnUNetv2_vismae_pack --preprocess-like D -c 3d_fullres``: volumes preprocessed as nnU-Net preprocesses D's
cases, packed in 3D chunks, read as lazy crops by a 3D pretraining run; broken files screened out, a pack of
other plans refused, an interrupted pack resumed."""

from __future__ import annotations

import copy
import json
import math

import blosc2
import numpy as np
import pytest

from pretrain.cli import main as pretrain_main
from pretrain.data import pack_volumes
from pretrain.data.mixture import PatchDataset
from pretrain.data.pack_volumes import VolumePackSource, open_pack
from pretrain.data.preprocess_like import CasePreprocessor
from pretrain.errors import PretrainUserError
from pretrain.pack_cli import main as pack_main
from tests.pretrain.helpers import PLAIN_3D
from tests.pretrain.test_preprocess_like import write_raw_volumes
from tests.pretrain.test_volumes import ENCODER_FLAGS, RecordingArray

CONFIGURATION = {
    "data_identifier": "nnUNetPlans_3d_fullres",
    "preprocessor_name": "DefaultPreprocessor",
    "batch_size": 2,
    "patch_size": [8, 16, 16],
    "spacing": [2.0, 0.5, 0.5],  # the Y and X axes are doubled: more chunks than one crop meets
    "normalization_schemes": ["ZScoreNormalization"],
    "use_mask_for_norm": [False],
    "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
    "architecture": PLAIN_3D,
}


def write_plans(root, dataset: str = "Dataset005_Balls", spacing=(2.0, 0.5, 0.5)) -> None:
    """The plans and dataset.json nnU-Net's preprocessor follows (what nnUNetv2_plan_and_preprocess writes,
    without running it)."""
    folder = root / dataset
    folder.mkdir(parents=True)
    plans = {
        "dataset_name": dataset,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [2.0, 1.0, 1.0],
        "original_median_shape_after_transp": [16, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {**copy.deepcopy(CONFIGURATION), "spacing": list(spacing)}},
        "foreground_intensity_properties_per_channel": {"0": {"mean": 100.0, "std": 30.0}},
    }
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    channels = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "ball": 1}, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps({**channels, "numTraining": 3}))


@pytest.fixture
def volumes(tmp_path, monkeypatch):
    """Three NIfTI volumes and a broken one; dataset 5's plans in nnUNet_preprocessed."""
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    write_plans(tmp_path / "preprocessed")
    images = write_raw_volumes(tmp_path / "raw") / "imagesTr"
    (images / "broken.nii.gz").write_bytes(b"not a volume")
    return images


def pack(inputs, out, *flags) -> int:
    return pack_main(["-i", str(inputs), "-o", str(out), "-np", "1", "--preprocess-like", "5", *flags])


def test_a_pack_holds_the_volumes_preprocessed_like_the_dataset(volumes, tmp_path, capsys):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 16, 16), 7, np.float32)), str(volumes / "constant.nii.gz"))
    out = tmp_path / "pack"
    assert pack(volumes, out) == 0
    assert "Packed 3 volumes" in capsys.readouterr().out
    source = VolumePackSource(str(out), ("5", "nnUNetPlans", "3d_fullres"))
    screened = {p.rsplit("/", 1)[1]: reason for p, reason, _ in source.skipped}  # screened out, counted
    assert screened == {"broken.nii.gz": "header", "constant.nii.gz": "constant"}
    assert source.num_items == 5 and len(source) == 3
    preprocessor = CasePreprocessor(str(tmp_path / "preprocessed" / "Dataset005_Balls"), "nnUNetPlans", "3d_fullres")
    index = json.loads((out / "pack.json").read_text())
    assert not list(out.rglob("*.pkl"))  # shapes and spacings are JSON
    for i, (path, shape, spacing, _) in enumerate(index["files"]):
        expected, properties = preprocessor.run(path)
        assert shape == list(expected.shape[1:]) and spacing == list(properties["spacing"])
        whole = source.load_region(i, tuple(slice(0, n) for n in shape))
        assert np.array_equal(whole, expected.astype(np.float16).astype(np.float32))  # nnU-Net's, in float16


def test_a_crop_decompresses_only_the_chunks_it_touches(volumes, tmp_path):
    assert pack(volumes, tmp_path / "pack") == 0
    source = VolumePackSource(str(tmp_path / "pack"), ("5", "nnUNetPlans", "3d_fullres"))
    real_array, opened = source._array, []
    source._array = lambda name: opened.append(RecordingArray(real_array(name))) or opened[-1]
    dataset = PatchDataset([source], [8, 16, 16], seed=2)
    for k in range(6):
        patch = dataset[k].numpy()
        array = opened[-1]
        (key,) = array.keys  # one read, of the crop's region only
        assert array.array.schunk.nchunks == math.prod(
            math.ceil(n / c) for n, c in zip(array.shape, array.array.chunks)
        )
        assert len(blosc2.get_slice_nchunks(array.array, key)) < array.array.schunk.nchunks  # not the whole volume
        assert np.array_equal(patch, array.array[key])


def test_an_interrupted_pack_resumes_and_other_plans_are_refused(volumes, tmp_path, monkeypatch, capsys):
    real, calls = pack_volumes.pack_volume, []

    def killed_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C, as a kill between two files
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(pack_volumes, "pack_volume", killed_after_two)
    out = tmp_path / "pack"
    assert pack(volumes, out) == 130
    assert not (out / "pack.json").exists() and len(list(out.glob("shards/*/*.json"))) == 2
    monkeypatch.setattr(pack_volumes, "pack_volume", lambda *args: calls.append(args[0]) or real(*args))
    assert pack(volumes, out) == 0
    assert len(calls) == 4 and len(set(calls)) == 4  # the rerun packed only the two files left

    assert pack_main(["-i", str(volumes), "-o", str(out), "--axis", "1"]) == 2  # slices into a pack of volumes
    assert "was packed with other settings" in capsys.readouterr().err
    plans_file = tmp_path / "preprocessed" / "Dataset005_Balls" / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["spacing"] = [3.0, 1.0, 1.0]
    plans_file.write_text(json.dumps(plans))
    with pytest.raises(PretrainUserError, match=r"holds volumes preprocessed like Dataset005_Balls .* not like"):
        VolumePackSource(str(out), ("5", "nnUNetPlans", "3d_fullres"))


def test_a_2d_pack_and_a_3d_run_refuse_each_other(volumes, tmp_path, capsys):
    assert pack_main(["-i", str(volumes), "-o", str(tmp_path / "slices"), "-np", "1"]) == 0
    run = ["--encoder", "cnn", "--plans-of", "5", "-c", "3d_fullres", "--steps", "1", "-device", "cpu"]
    assert pretrain_main([*run, "--pack", str(tmp_path / "slices"), "-o", str(tmp_path / "run")]) == 2
    assert "is a pack of 2D slices; a 3D encoder pretrains on a pack of volumes" in capsys.readouterr().err
    assert pack(volumes, tmp_path / "volumes", "-c", "2d") == 2
    assert "The plans have no configuration '2d'" in capsys.readouterr().err
    assert pack(volumes, tmp_path / "volumes") == 0
    with pytest.raises(PretrainUserError, match="is a pack of volumes; a 2D encoder pretrains on a pack of 2D slices"):
        open_pack(str(tmp_path / "volumes"), False, (None, "nnUNetPlans", "2d"))


@pytest.mark.slow  # two 3D pretraining steps
def test_pretraining_reads_lazy_crops_of_a_pack(volumes, tmp_path):
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint

    assert pack(volumes, tmp_path / "pack") == 0
    run = ["--encoder", "cnn", "--plans-of", "5", "-c", "3d_fullres", "--pack", str(tmp_path / "pack")]
    run += ["-o", str(tmp_path / "run"), "--batch-size", "2", "--workers", "0", "--precision", "fp32"]
    run += ["--max-unusable", "0.3"]  # the broken volume
    assert pretrain_main([*run, "--steps", "2", "--preview-every", "0", "-device", "cpu"]) == 0
    checkpoint = read_encoder_checkpoint(tmp_path / "run" / "encoder.safetensors")
    assert checkpoint.metadata["spatial_dims"] == 3
    (source,) = checkpoint.metadata["data_sources"]["sources"]
    assert source["type"] == "pack" and source["preprocessed_like"]["dataset"] == "Dataset005_Balls"


@pytest.mark.parametrize("family", sorted(ENCODER_FLAGS))
def test_a_run_from_a_pack_of_volumes_resumes_as_the_uninterrupted_one(family, volumes, tmp_path):
    import torch

    from tests.pretrain.test_volumes import digest, recorded_volume_run

    assert pack(volumes, tmp_path / "pack") == 0
    run = ["--encoder", family, "--plans-of", "5", "-c", "3d_fullres", "--pack", str(tmp_path / "pack")]
    run += ENCODER_FLAGS[family]
    run += ["--batch-size", "2", "--workers", "0", "--preview-every", "0", "-device", "cpu", "--max-unusable", "0.3"]
    extra = ["--steps", "4", "--warmup-steps", "1", "--save-every", "100", "--precision", "fp32"]
    full, imgs, losses = recorded_volume_run(tmp_path / "full", extra, run=run)
    recorded_volume_run(tmp_path / "split", extra, stop_after=2, run=run)
    resumed, rest_imgs, rest_losses = recorded_volume_run(tmp_path / "split", extra, run=run)
    assert len(imgs) == 4 and imgs[0].dim() == 5 and len(rest_imgs) == 2 and resumed.step == 4
    assert digest(rest_imgs) == digest(imgs[2:]) and rest_losses == losses[2:]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_full_disk_is_one_sentence(volumes, tmp_path, monkeypatch, capsys):
    import shutil

    def full(*args, **kwargs):  # what blosc2 raises when a write fails: no errno
        raise RuntimeError("Error while creating the NDArray")

    real_usage = shutil.disk_usage
    monkeypatch.setattr(blosc2, "asarray", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=0))
    assert pack(volumes, tmp_path / "pack") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after tqdm's bar
    assert "Traceback" not in err and last.startswith("nnUNetv2_vismae_pack: error: Cannot write ")
    assert last.endswith(
        "_v.b2nd: No space left on device; what was saved before is intact: make room and rerun the same command."
    )
