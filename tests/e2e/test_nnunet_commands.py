"""End to end through nnU-Net's stock commands: plan, train, predict, evaluate (a few minutes)."""

import json
from pathlib import Path

import pytest
import torch

from nnunetv2_vismae.architectures import SwinEncoder
from nnunetv2_vismae.checkpoint import save_encoder_checkpoint

from ..conftest import TINY_ENCODER, run

TRAINER = "VisMAETrainer_4epochs_20iters"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    encoder = SwinEncoder(in_channels=1, **TINY_ENCODER)
    path = tmp_path_factory.mktemp("ckpt") / "encoder.safetensors"
    save_encoder_checkpoint(
        path,
        encoder.state_dict(),
        {"family": "swin", "encoder_config": encoder.config.to_json(), "normalization": {"scheme": "zscore"}},
    )
    return path


@pytest.mark.slow
def test_pretrained_swinunet_trains_predicts_and_evaluates(preprocessed_dataset, tiny_checkpoint):
    env = dict(preprocessed_dataset, nnUNet_n_proc_DA="0")  # in-process, as the demo: a worker costs seconds of imports
    run(["nnUNetv2_vismae_plan", "-d", "990", "--pretrained", str(tiny_checkpoint)], env)
    run(["nnUNetv2_train", "990", "2d", "0", "-p", "nnUNetVisMAEPlans", "-tr", TRAINER, "-device", "cpu"], env)

    fold = Path(env["nnUNet_results"]) / "Dataset990_Synthetic" / f"{TRAINER}__nnUNetVisMAEPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert f"Loaded swin encoder checkpoint {tiny_checkpoint}" in log and "(100.0%)" in log
    assert (fold / "checkpoint_final.pth").is_file()

    raw = Path(env["nnUNet_raw"]) / "Dataset990_Synthetic"
    pred = Path(env["nnUNet_results"]) / "pred"
    run(
        [
            "nnUNetv2_predict",
            "-i",
            str(raw / "imagesTr"),
            "-o",
            str(pred),
            "-d",
            "990",
            "-c",
            "2d",
            "-f",
            "0",
            "-p",
            "nnUNetVisMAEPlans",
            "-tr",
            TRAINER,
            "-device",
            "cpu",
            "-npp",
            "0",
            "-nps",
            "0",
        ],
        env,
    )
    run(
        [
            "nnUNetv2_evaluate_folder",
            str(raw / "labelsTr"),
            str(pred),
            "-djfile",
            str(fold.parent / "dataset.json"),
            "-pfile",
            str(fold.parent / "plans.json"),
            "-np",
            "1",
        ],
        env,
    )
    dice = json.loads((pred / "summary.json").read_text())["foreground_mean"]["Dice"]
    # an all-background or random prediction scores below 0.1 on these small structures
    assert dice > 0.3, f"Dice {dice} is not clearly above chance"
