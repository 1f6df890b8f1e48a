"""The cnn-mae arm: nnU-Net's own network fine-tuned from a cnn checkpoint, beside the other arms."""
from pathlib import Path

import pytest

from nnunetv2_vismae.benchmark import cli
from nnunetv2_vismae.benchmark.arms import default_arms
from nnunetv2_vismae.checkpoint import save_encoder_checkpoint

from ..conftest import TINY_ENCODER


def swin_checkpoint(path: Path) -> Path:
    from nnunetv2_vismae.architectures import SwinEncoder

    encoder = SwinEncoder(in_channels=1, **TINY_ENCODER)
    save_encoder_checkpoint(path, encoder.state_dict(), {"family": "swin", "encoder_config": encoder.config.to_json(),
                                                         "normalization": {"scheme": "zscore"}})
    return path


def test_all_four_arms_plan_from_their_own_checkpoint(fake_nnunet, tmp_path, capsys):
    swin, cnn = tmp_path / "swin.safetensors", tmp_path / "cnn.safetensors"
    swin.write_bytes(b"x")
    cnn.write_bytes(b"x")
    assert cli.main(["-d", "990", "--arms", "nnunet", "cnn-mae", "vismae", "scratch", "--labels", "10", "-f", "0",
                     "-device", "cpu", "--pretrained", str(swin), "--pretrained-cnn", str(cnn), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"nnUNetv2_vismae_plan -d 990 -o nnUNetMAEPlans --pretrained {cnn.resolve()}",
                         f"nnUNetv2_vismae_plan -d 990 -o nnUNetVisMAEPlans --pretrained {swin.resolve()}"]
    assert "nnUNetv2_train 990 2d 0 -p nnUNetMAEPlans -tr nnUNetTrainerMAE_labels10 -device cpu" in lines
    assert len(lines) == 6


def test_cnn_mae_needs_its_checkpoint_and_is_left_out_by_default_without_it(fake_nnunet, capsys):
    assert "cnn-mae" not in default_arms(False) and "cnn-mae" in default_arms(True)
    with pytest.raises(SystemExit) as stop:
        cli.main(["-d", "990", "--arms", "cnn-mae", "-device", "cpu"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "The cnn-mae arm fine-tunes a pretrained cnn encoder; pass --pretrained-cnn FILE" in err


def test_a_swin_checkpoint_given_as_the_cnn_one_is_refused(fake_nnunet, tmp_path, capsys):
    swin = swin_checkpoint(tmp_path / "swin.safetensors")
    with pytest.raises(SystemExit) as stop:
        cli.main(["-d", "990", "--arms", "cnn-mae", "--labels", "10", "-f", "0", "-device", "cpu",
                  "--pretrained-cnn", str(swin)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2
    assert err.endswith(f"--pretrained-cnn {swin.resolve()} holds a swin encoder, expected a cnn one.")
