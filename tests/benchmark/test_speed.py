"""nnUNetv2_vismae_speed's measurements on tiny configurations: schema and sanity, never timings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from nnunetv2_vismae.architectures import SwinEncoderConfig
from nnunetv2_vismae.benchmark import speed, speed_fixtures, speed_timing
from nnunetv2_vismae.benchmark.speed_report import markdown_report

CPU = torch.device("cpu")
# a 2-stage Swin at 32 px and one step: the pretraining child runs in seconds
TINY_PRETRAIN = [
    "--embed-dim",
    "12",
    "--depths",
    "1",
    "1",
    "--heads",
    "3",
    "6",
    "--window",
    "4",
    "--patch-size",
    "32",
    "--mask-block",
    "2",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--repeats",
    "1",
    "--loader-batches",
    "1",
]


def test_matmul_yardstick_is_positive_and_finite():
    flops = speed_timing.matmul_flops(CPU, torch.float32, n=64)
    assert np.isfinite(flops) and flops > 0


@pytest.mark.slow  # one python -m pretrain.speed child per configuration
def test_pretraining_child_reports_throughput_flops_and_memory(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(images / f"{i}.png")
    results = speed.measure_pretraining(images, CPU, tmp_path, {"tiny": TINY_PRETRAIN, "broken": ["--mask-ratio", "2"]})
    tiny = results["tiny"]
    assert tiny["batch_size"] == 2 and tiny["patch_size"] == 32 and tiny["workers"] == 0
    assert tiny["images_per_s"] == pytest.approx(2 / tiny["step_s"])
    # forward + backward of a real model: at least the patch embedding's matmul, three times
    assert tiny["flops_per_step"] > 3 * 2 * (32 // 4) ** 2 * 16 * 12
    assert tiny["model_flops_per_s"] == pytest.approx(tiny["flops_per_step"] / tiny["step_s"])
    assert tiny["loader_samples_per_s"] > 0 and tiny["peak_mb"] > 0
    assert "mask-ratio" in results["broken"]["error"]


def write_fingerprint(root, size: int, cases: int) -> None:
    """What nnU-Net's fingerprint extractor writes for ``cases`` phantoms (it takes ~15 s to spawn)."""
    folder = root / "nnUNet_preprocessed" / f"Dataset{speed_fixtures.DATASET_ID:03d}_VisMAEPhantoms"
    folder.mkdir(parents=True)
    intensities = {
        "max": 3.0,
        "mean": 0.0,
        "median": 0.0,
        "min": -3.0,
        "percentile_00_5": -2.5,
        "percentile_99_5": 2.5,
        "std": 1.0,
    }
    fingerprint = {
        "foreground_intensity_properties_per_channel": {"0": intensities},
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [[1, size, size]] * cases,
        "spacings": [[999.0, 2.5, 2.5]] * cases,
    }
    (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))


def test_finetuning_and_inference_compare_both_trainers(tmp_path):
    tiny = SwinEncoderConfig(embed_dim=12, depths=(1, 1), num_heads=(3, 6), window_size=4)
    with speed_fixtures.nnunet_folders(tmp_path):
        write_fingerprint(tmp_path, 32, 2)
        speed_fixtures.prepare_plans(tmp_path, size=32, num_train=2, num_unlabeled=0, encoder=tiny)
        finetuning = speed.measure_finetuning(CPU, batch_size=2, repeats=1)
        inference = speed.measure_inference(CPU, repeats=1, case_size=48)
    assert set(finetuning) == {"fp32", "bf16"}  # on a CPU both are reported, bf16 measured only where native
    if speed.native_bf16(CPU):
        assert set(finetuning["bf16"]) == {"nnunet", "vismae"}
    else:
        assert "no native bf16" in finetuning["bf16"]["not_measured"]
    fp32 = finetuning["fp32"]
    assert fp32["nnunet"]["patch_size"] == fp32["vismae"]["patch_size"]
    assert fp32["vismae"]["parameters"] != fp32["nnunet"]["parameters"]  # two different networks
    assert all(r["step_s"] > 0 and r["step_cpu_s"] > 0 and r["batch_size"] == 2 for r in fp32.values())
    assert inference["nnunet"]["case_shape"] == inference["vismae"]["case_shape"] == [48, 48]
    assert all(
        r["case_s"] > 0 and r["case_cpu_s"] > 0 and r["mirroring_axes"] == [0, 1] for r in inference.values()
    )  # nnU-Net's default 2D test-time mirroring

    report = markdown_report(
        {
            "machine": speed.machine(CPU),
            "finetuning": finetuning,
            "inference": inference,
            "matmul_flops_per_s": {"fp32": 1e11, "bf16": 1e9},
        }
    )
    assert "fine-tune step fp32: VisMAE / nnU-Net" in report and "inference per case" in report
    assert report.count("goal <= 1") == 2 and report.count("CPU time") == 2


def test_measurements_restore_the_environment_even_on_error(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no trainer")

    monkeypatch.setenv("nnUNet_vismae_cpu_bf16", "as the user set it")
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.setattr(speed, "load_trainer", broken)
    monkeypatch.setattr(speed, "predictor_for", broken)
    before = dict(os.environ)
    with pytest.raises(RuntimeError), speed_fixtures.nnunet_folders(tmp_path):
        assert os.environ["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
        speed.measure_finetuning(CPU)
    with pytest.raises(RuntimeError):
        speed.measure_inference(CPU)
    assert dict(os.environ) == before


# ----------------------------------------------------------- the speed levers keep the numerics
def test_bf16_and_fp32_mae_losses_agree_on_a_fixed_batch():
    from pretrain.families.swin import SwinMAE
    from pretrain.masking import window_mask

    torch.manual_seed(0)
    model = SwinMAE(
        SwinEncoderConfig(embed_dim=12, depths=(1, 1), num_heads=(3, 6), window_size=4, drop_path_rate=0.0)
    ).eval()
    imgs = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = window_mask(2, (8, 8), 2, 0.75, generator=torch.Generator().manual_seed(3))
    fp32, _ = model(imgs, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16, pred = model(imgs, mask)
    assert pred.dtype == torch.bfloat16  # autocast did reach the network
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)
