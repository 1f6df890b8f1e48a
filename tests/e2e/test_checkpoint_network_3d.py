"""End to end (issue 32): a checkpoint converted from nnssl, whose network is not the one nnU-Net plans for the
dataset, planned on the dataset's 3d_fullres data with nnUNetv2_vismae_plan --checkpoint-network and fine-tuned by
the stock nnUNetv2_train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.io.nnunet import CONFIGURATION_3D

from ..checkpoint.test_convert_nnssl import CITATIONS, nnssl_network, save_like_nnssl, serialized_plan
from ..conftest import nnunet_env, run
from .test_cnn_mae_3d import DATASET, write_raw_volumes

TRAINER = "nnUNetTrainerMAE_1epochs_2iters"


@pytest.mark.slow
def test_stock_nnunetv2_train_fine_tunes_a_converted_nnssl_network_on_another_datasets_plans(tmp_path):
    env = nnunet_env(tmp_path / "nnunet")
    raw = write_raw_volumes(Path(env["nnUNet_raw"]))
    run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET), "-c", CONFIGURATION_3D, "-np", "1", "-npfp", "1"], env)
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process
    source, checkpoint = tmp_path / "checkpoint_final.pth", tmp_path / "resenc.safetensors"
    save_like_nnssl(source, nnssl_network(), serialized_plan(), CITATIONS)
    run(["nnUNetv2_vismae_convert", "--from", "nnssl", str(source), str(checkpoint)], env)

    plan = ["nnUNetv2_vismae_plan", "-d", str(DATASET), "-c", CONFIGURATION_3D, "--pretrained", str(checkpoint)]
    refused = run(plan, env, check=False)
    assert refused.returncode == 2 and "--checkpoint-network" in refused.stderr
    planned = run([*plan, "--checkpoint-network"], env)
    assert "Planned the checkpoint's ResidualEncoderUNet on nnUNetPlans_3d_fullres" in planned.stdout

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
    assert CITATIONS[0]["apa_citations"][0] in log  # the citations nnssl's file carries
    plans = json.loads((fold.parent / "plans.json").read_text())["configurations"][CONFIGURATION_3D]
    assert plans["architecture"] == read_encoder_checkpoint(checkpoint).encoder_config["architecture"]
    assert plans["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert "Dice" in (fold / "validation" / "summary.json").read_text()
