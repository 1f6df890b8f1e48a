"""``python -m pretrain.speed`` times the loop's own step, not a copy of it."""

from __future__ import annotations

import math

import pytest
import torch

from nnunetv2_vismae.device import StepTiming
from pretrain.errors import PretrainUserError
from pretrain.runtime import setup_runtime
from pretrain.speed import StepRunner, loader_samples_per_s, measure, timing_of
from pretrain.speed import parse as parse_speed
from pretrain.train import Pretrainer
from tests.pretrain.helpers import TINY, parse, write_volume_dataset


def test_the_timed_step_is_the_training_step_with_its_nan_guard(png_folder, tmp_path):
    trainer = Pretrainer(
        parse([*TINY, "-i", png_folder, "-o", str(tmp_path / "run"), "--max-bad-steps", "1"]), setup_runtime("cpu")
    ).setup()
    trainer.release()
    batch, _ = loader_samples_per_s(trainer.loader, 1)
    step = StepRunner(trainer, batch)
    step()
    assert trainer.step == 1 and trainer.scheduler.last_epoch == 1  # stepped as the loop steps
    forward = trainer.model.forward

    def nan_loss(imgs, mask):
        loss, pred = forward(imgs, mask)
        return loss * math.nan, pred

    trainer.model.forward = nan_loss
    with pytest.raises(PretrainUserError, match="non-finite loss"):
        step()
    assert trainer.step == 1


def test_timing_warms_up_then_times_and_flags_override_the_devices_defaults(png_folder, tmp_path):
    trainer = Pretrainer(parse([*TINY, "-i", png_folder, "-o", str(tmp_path / "run")]), setup_runtime("cpu")).setup()
    trainer.release()
    batch, _ = loader_samples_per_s(trainer.loader, 1)
    step = StepRunner(trainer, batch)
    assert step.flops() > 0 and trainer.step == 1  # the FLOP count is the first warm-up step
    step.seconds(StepTiming(warmup=3, repeats=2, statistic="median"))
    assert trainer.step == 1 + 2 + 2
    assert timing_of(torch.device("cuda"), None, None) == StepTiming(5, 20, "median")
    assert timing_of(torch.device("cuda"), 2, 7) == StepTiming(2, 7, "median")
    assert timing_of(torch.device("cpu"), None, None) == StepTiming(1, 3, "best")


def test_the_child_measures_the_3d_cnn_step_and_loader_on_volumes(tmp_path, monkeypatch):
    """What ``nnUNetv2_vismae_speed -c 3d_fullres`` reads from its child: the cnn family on 3D crops."""
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    write_volume_dataset(str(tmp_path / "preprocessed"))
    mine, args = parse_speed(
        ["--json", str(tmp_path / "out.json"), "--encoder", "cnn", "-d", "3", "-c", "3d_fullres"]
        + ["--patch-size", "8", "16", "16", "--batch-size", "2", "--workers", "0", "--precision", "fp32"]
        + ["--repeats", "1", "--loader-batches", "1", "-device", "cpu", "--preview-every", "0"],
        str(tmp_path / "run"),
    )
    result = measure(args, (mine.warmup, mine.repeats), mine.loader_batches)
    assert result["family"] == "cnn" and result["patch_size"] == [8, 16, 16] and result["precision"] == "fp32"
    assert result["step_s"] > 0 and result["step_cpu_s"] > 0 and result["flops_per_step"] > 0
    assert result["loader_vs_model"] == pytest.approx(result["loader_samples_per_s"] / result["images_per_s"])
