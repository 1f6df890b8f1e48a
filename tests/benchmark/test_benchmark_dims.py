"""``nnUNetv2_vismae_benchmark -c 3d_fullres`` (dry runs): nnU-Net's and the cnn family's arms in 3D (issue 32),
the Swin arms training the 3D Swin (the swin3d family, issue 33), planning for the configuration."""

from __future__ import annotations

import json

import pytest

from nnunetv2_vismae.benchmark import cli
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D
from tests.checkpoint.test_spatial_dims import PLAIN_3D, save_cnn
from tests.conftest import save_swin3d_checkpoint
from tests.pretrain.test_cnn_family import PLAIN

from .conftest import DATASET

DRY_RUN_3D = ["-d", "990", "-c", CONFIGURATION_3D, "--labels", "10", "-f", "0", "-device", "cpu", "--dry-run"]


@pytest.fixture
def volumes(fake_nnunet, tmp_path) -> dict:
    """The fake tree with nnU-Net plans holding 2d and 3d_fullres, a 2D and a 3D cnn checkpoint and a swin3d one."""
    plans = {
        "configurations": {CONFIGURATION_2D: {"patch_size": [32, 32]}, CONFIGURATION_3D: {"patch_size": [16, 32, 32]}}
    }
    (fake_nnunet["preprocessed"] / DATASET / "nnUNetPlans.json").write_text(json.dumps(plans))
    fake_nnunet["cnn2d"], fake_nnunet["cnn3d"] = tmp_path / "cnn2d.safetensors", tmp_path / "cnn3d.safetensors"
    save_cnn(fake_nnunet["cnn2d"], PLAIN)
    save_cnn(fake_nnunet["cnn3d"], PLAIN_3D)
    fake_nnunet["swin3d"] = save_swin3d_checkpoint(tmp_path / "swin3d.safetensors")
    return fake_nnunet


def one_sentence(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def trainers_of(lines: list[str]) -> set[str]:
    return {line.split(" -tr ")[1].split()[0] for line in lines if line.startswith("nnUNetv2_train ")}


def test_3d_plans_the_configuration_and_trains_nnunet_the_cnn_arms_and_the_3d_swin_from_scratch(volumes, capsys):
    assert cli.main([*DRY_RUN_3D, "--pretrained", str(volumes["cnn3d"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    plans = [line for line in lines if line.startswith("nnUNetv2_vismae_plan ")]
    train = [line for line in lines if line.startswith("nnUNetv2_train ")]
    checkpoint = volumes["cnn3d"].resolve()
    assert plans == [
        f"nnUNetv2_vismae_plan -d 990 -c {CONFIGURATION_3D} -o nnUNetVisMAEPlans",  # the scratch arm's, no checkpoint
        f"nnUNetv2_vismae_plan -d 990 -c {CONFIGURATION_3D} -o nnUNetMAEPlans --pretrained {checkpoint}",
    ]
    assert len(lines) == len(plans) + len(train)
    assert all(line.startswith(f"nnUNetv2_train 990 {CONFIGURATION_3D} 0 -p ") for line in train)
    assert trainers_of(train) == {
        "nnUNetTrainer_labels100",  # the reference
        "nnUNetTrainer_labels10",
        "VisMAETrainerScratch_labels10",
        "nnUNetTrainerMAE_labels10",
        "nnUNetTrainerMAEScratch_labels10",
    }


def test_the_cnn_probe_arms_run_in_3d(volumes, capsys):
    argv = [*DRY_RUN_3D, "--pretrained", str(volumes["cnn3d"]), "--arms", "cnn-mae", "--probe"]
    assert cli.main(argv) == 0
    assert trainers_of(capsys.readouterr().out.splitlines()) == {
        "nnUNetTrainerMAE_labels10",
        "nnUNetTrainerMAEFrozen_labels10",
        "nnUNetTrainerMAEFrozenScratch_labels10",
    }


def test_the_swin_arms_train_the_3d_swin_from_a_swin3d_checkpoint(volumes, capsys):
    argv = [*DRY_RUN_3D, "--arms", "vismae", "scratch", "nnunet", "--probe", "--pretrained", str(volumes["swin3d"])]
    assert cli.main(argv) == 0
    plan, *train = capsys.readouterr().out.splitlines()
    checkpoint = volumes["swin3d"].resolve()
    assert plan == f"nnUNetv2_vismae_plan -d 990 -c {CONFIGURATION_3D} -o nnUNetVisMAEPlans --pretrained {checkpoint}"
    assert {line.split(" -p ")[1].split()[0] for line in train if "-tr nnUNetTrainer_" not in line} == {
        "nnUNetVisMAEPlans"
    }
    assert trainers_of(train) == {
        "VisMAETrainer_labels10",
        "VisMAETrainerScratch_labels10",
        "VisMAETrainerFrozen_labels10",
        "VisMAETrainerFrozenScratch_labels10",
        "nnUNetTrainer_labels100",
        "nnUNetTrainer_labels10",
    }


@pytest.mark.parametrize("arm", ["vismae", "vismae-frozen"])
def test_a_named_pretrained_swin_arm_asks_for_a_swin3d_checkpoint_in_3d(volumes, capsys, arm):
    err = one_sentence([*DRY_RUN_3D, "--arms", "nnunet", arm], capsys)
    assert err.endswith(
        f"The {arm} arm fine-tunes a pretrained swin3d encoder; pass --pretrained FILE with a swin3d checkpoint "
        "(or leave the arm out with --arms)."
    )


@pytest.mark.parametrize(
    "checkpoint, configuration, dims, planned", [("cnn2d", CONFIGURATION_3D, 2, 3), ("cnn3d", CONFIGURATION_2D, 3, 2)]
)
def test_a_checkpoint_of_other_dimensions_than_the_configuration_is_refused(
    volumes, capsys, checkpoint, configuration, dims, planned
):
    argv = ["-d", "990", "-c", configuration, "--pretrained", str(volumes[checkpoint]), "-device", "cpu", "--dry-run"]
    err = one_sentence(argv, capsys)
    assert err.endswith(
        f"--pretrained {volumes[checkpoint]} holds a {dims}D encoder, but -c {configuration} is {planned}D; "
        "benchmark the configuration it was pretrained on."
    )


def test_plans_written_for_2d_get_the_3d_configuration_planned(volumes, capsys):
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
    from nnunetv2_vismae.checkpoint.reference import checkpoint_reference

    reference = checkpoint_reference(volumes["cnn2d"], read_encoder_checkpoint(volumes["cnn2d"]))
    plans = {"configurations": {CONFIGURATION_2D: {"architecture": PLAIN, PRETRAINED_KEY: reference}}}
    (volumes["preprocessed"] / DATASET / "nnUNetMAEPlans.json").write_text(json.dumps(plans))
    assert cli.main([*DRY_RUN_3D, "--pretrained", str(volumes["cnn3d"]), "--arms", "cnn-mae"]) == 0
    assert (
        capsys.readouterr()
        .out.splitlines()[0]
        .startswith(f"nnUNetv2_vismae_plan -d 990 -c {CONFIGURATION_3D} -o nnUNetMAEPlans --pretrained")
    )
