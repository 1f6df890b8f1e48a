"""End to end in 3D through nnU-Net's stock commands (issue 32): a 3D cnn checkpoint of nnU-Net's 3d_fullres
network -> nnUNetv2_vismae_plan -c 3d_fullres -> nnUNetv2_train / nnUNetv2_predict / nnUNetv2_evaluate_folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D

from ..conftest import nnunet_env, run
from ..training.test_cnn_trainer import saved_cnn_encoder

DATASET = 991
TRAINER = "nnUNetTrainerMAE_labels50_1epochs_2iters"
SHAPE = (16, 32, 32)  # z, y, x


def write_volume(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))  # anisotropic, as MR volumes often are
    sitk.WriteImage(image, str(path))


def write_raw_volumes(raw_root: Path, num_cases: int = 6) -> Path:
    """Noisy volumes with a bright ball (label 1) at a random place."""
    folder = raw_root / f"Dataset{DATASET}_Volumes"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(DATASET)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for i in range(num_cases):
        cz, cy, cx = rng.integers(5, 11), rng.integers(10, 22), rng.integers(10, 22)
        label = ((2 * (zz - cz)) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 < 36).astype(np.uint8)
        image = (100 + 80 * label + rng.normal(0, 15, SHAPE)).astype(np.float32)
        write_volume(folder / "imagesTr" / f"vol_{i:03d}_0000.nii.gz", image)
        write_volume(folder / "labelsTr" / f"vol_{i:03d}.nii.gz", label)
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MR"},
                "labels": {"background": 0, "ball": 1},
                "numTraining": num_cases,
                "file_ending": ".nii.gz",
            }
        )
    )
    return folder


@pytest.mark.slow
def test_3d_fullres_fine_tunes_a_3d_cnn_checkpoint_with_stock_commands(tmp_path):
    env = nnunet_env(tmp_path / "nnunet")
    raw = write_raw_volumes(Path(env["nnUNet_raw"]))
    # nnU-Net's 3D planner sets torch's threads to nnUNet_n_proc_DA, which must not be 0 there
    run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET), "-c", CONFIGURATION_3D, "-np", "1", "-npfp", "1"], env)
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process
    preprocessed = Path(env["nnUNet_preprocessed"]) / raw.name
    source = json.loads((preprocessed / "nnUNetPlans.json").read_text())["configurations"][CONFIGURATION_3D]
    checkpoint = tmp_path / "encoder3d.safetensors"
    saved_cnn_encoder(checkpoint, source["architecture"], spatial_dims=3)

    planned = run(
        ["nnUNetv2_vismae_plan", "-d", str(DATASET), "-c", CONFIGURATION_3D, "--pretrained", str(checkpoint)], env
    )
    assert f"nnUNetv2_train {DATASET} {CONFIGURATION_3D} FOLD -p nnUNetMAEPlans -tr nnUNetTrainerMAE" in planned.stdout
    refused = run(
        ["nnUNetv2_vismae_plan", "-d", str(DATASET), "-c", CONFIGURATION_2D, "--pretrained", str(checkpoint)],
        env,
        check=False,
    )
    assert refused.returncode == 2 and refused.stderr.strip().endswith(
        f"holds a 3D encoder, but configuration {CONFIGURATION_2D} of plans nnUNetPlans is 2D; plan the configuration "
        "it was pretrained on."
    )

    run(
        [
            "nnUNetv2_train",
            str(DATASET),
            CONFIGURATION_3D,
            "0",
            "-p",
            "nnUNetMAEPlans",
            "-tr",
            TRAINER,
            "-device",
            "cpu",
        ],
        env,
    )
    fold = Path(env["nnUNet_results"]) / raw.name / f"{TRAINER}__nnUNetMAEPlans__{CONFIGURATION_3D}" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert f"Loaded cnn encoder checkpoint {checkpoint}" in log and "(100.0%)" in log and "0 missing" in log
    plans = json.loads((fold.parent / "plans.json").read_text())
    assert plans["configurations"][CONFIGURATION_3D]["architecture"] == source["architecture"]
    assert "Dice" in (fold / "validation" / "summary.json").read_text()

    images, predictions = tmp_path / "images", tmp_path / "predictions"
    images.mkdir()
    for case in sorted((raw / "imagesTr").iterdir())[:2]:
        (images / case.name).write_bytes(case.read_bytes())
    run(
        [
            "nnUNetv2_predict", "-i", str(images), "-o", str(predictions), "-d", str(DATASET),
            "-c", CONFIGURATION_3D, "-p", "nnUNetMAEPlans", "-tr", TRAINER, "-f", "0", "-device", "cpu",
            "--disable_tta", "-npp", "1", "-nps", "1",
        ],
        env,
    )  # fmt: skip
    assert len(list(predictions.glob("*.nii.gz"))) == 2
    run(
        [
            "nnUNetv2_evaluate_folder", str(raw / "labelsTr"), str(predictions),
            "-djfile", str(fold.parent / "dataset.json"), "-pfile", str(fold.parent / "plans.json"), "-np", "1",
            "--chill",  # two of the cases
        ],
        env,
    )  # fmt: skip
    summary = json.loads((predictions / "summary.json").read_text())
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
