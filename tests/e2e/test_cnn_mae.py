"""End to end through the commands: pretrain --encoder cnn -> nnUNetMAEPlans -> nnUNetv2_train -tr nnUNetTrainerMAE."""

import json
from pathlib import Path

import pytest

from nnunetv2_vismae.planning import cli as plan
from tests.conftest import run, set_nnunet_folders

TRAINER = "nnUNetTrainerMAE_1epochs_4iters"


@pytest.mark.slow
def test_mae_plans_train_with_the_pretrained_cnn_encoder(preprocessed_dataset, cnn_pretraining, monkeypatch):
    env = dict(preprocessed_dataset, nnUNet_n_proc_DA="0")
    checkpoint = cnn_pretraining / "encoder.safetensors"  # the pretraining run the cnn checkpoint tests check
    set_nnunet_folders(monkeypatch, env)
    # planning in this process: its console script runs in test_nnunet_commands and the 3D pipeline's test
    assert plan.main(["-d", "990", "--pretrained", str(checkpoint)]) == 0
    run(["nnUNetv2_train", "990", "2d", "0", "-p", "nnUNetMAEPlans", "-tr", TRAINER, "-device", "cpu"], env)

    fold = Path(env["nnUNet_results"]) / "Dataset990_Synthetic" / f"{TRAINER}__nnUNetMAEPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert f"Loaded cnn encoder checkpoint {checkpoint}" in log and "(100.0%)" in log and "0 missing" in log
    assert (fold / "checkpoint_final.pth").is_file()
    plans = json.loads((fold.parent / "plans.json").read_text())
    source = json.loads((Path(env["nnUNet_preprocessed"]) / "Dataset990_Synthetic" / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d"]["architecture"] == source["configurations"]["2d"]["architecture"]
    assert "Dice" in (fold / "validation" / "summary.json").read_text()
