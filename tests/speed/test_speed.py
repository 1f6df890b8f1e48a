"""nnUNetv2_vismae_speed's measurements on tiny configurations: schema and sanity, never timings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch._dynamo import OptimizedModule

from nnunetv2_vismae.architectures import Swin3dEncoderConfig, SwinEncoderConfig
from nnunetv2_vismae.device import StepTiming
from nnunetv2_vismae.speed import cli as speed
from nnunetv2_vismae.speed import fixtures as speed_fixtures
from nnunetv2_vismae.speed import timing as speed_timing
from nnunetv2_vismae.speed.report import markdown_report

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


def write_fingerprint(
    root, size: int, cases: int, dataset: str = speed_fixtures.DATASET, shape=None, spacing=(999.0, 2.5, 2.5)
) -> None:
    """What nnU-Net's fingerprint extractor writes for ``cases`` phantoms (it takes ~15 s to spawn), of
    ``shape`` (default: one slice of ``size`` x ``size``)."""
    folder = root / "nnUNet_preprocessed" / dataset
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
        "shapes_after_crop": [list(shape or (1, size, size))] * cases,
        "spacings": [list(spacing)] * cases,
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
    assert all(r["precision"] == "fp32" and not r["compiled"] for r in fp32.values())  # nnU-Net: eager on CPU
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
    assert ("fine-tune step bf16: VisMAE / nnU-Net" in report) == speed.native_bf16(CPU)
    ratios = 3 if speed.native_bf16(CPU) else 2  # fp32 step, inference, and the bf16 step where it is measured
    assert report.count("goal <= 1") == ratios and report.count("CPU time") == ratios


# a 2-stage 3D Swin (total stride 8 per axis), in the plans and in the pretraining child
TINY_SWIN3D = Swin3dEncoderConfig(embed_dim=12, depths=(1, 1), num_heads=(3, 6), window_size=4)
TINY_SWIN3D_PRETRAIN = ("--embed-dim", "12", "--depths", "1", "1", "--heads", "3", "6", "--window", "4")


@pytest.mark.slow  # nnU-Net's and VisMAE's 3D steps, two python -m pretrain.speed children (one with 4 workers)
def test_volumes_compare_the_3d_steps_with_nnunets_on_the_same_plans(tmp_path, monkeypatch):
    shape = (16, 24, 24)  # nnU-Net's patch, a multiple of the tiny Swin's stride: VisMAE's plans keep it
    monkeypatch.setattr(speed, "finetuning_precisions", lambda device: {"fp32": None})  # bf16: the 2D test's
    with speed_fixtures.nnunet_folders(tmp_path):
        write_fingerprint(tmp_path, 0, 2, speed_fixtures.VOLUME_DATASET, shape, (3.0, 1.0, 1.0))
        speed_fixtures.prepare_volume_plans(tmp_path, num_train=2, shape=shape, encoder=TINY_SWIN3D)
        volumes = speed.measure_volumes(CPU, tmp_path, repeats=1, vismae_flags=TINY_SWIN3D_PRETRAIN)
    nnunet, vismae = volumes["finetuning"]["fp32"]["nnunet"], volumes["finetuning"]["fp32"]["vismae"]
    pretraining, swin3d = volumes["pretraining"]["cnn"], volumes["pretraining"]["swin3d"]
    assert pretraining["family"] == "cnn" and pretraining["workers"] == 4  # the pretraining command's default
    assert pretraining["patch_size"] == nnunet["patch_size"] and len(nnunet["patch_size"]) == 3
    assert pretraining["batch_size"] == nnunet["batch_size"]
    assert pretraining["precision"] == nnunet["precision"] == "fp32"
    assert nnunet["step_s"] > 0 and nnunet["step_cpu_s"] > 0 and pretraining["step_cpu_s"] > 0
    # VisMAE's Swin3dUNet on its own plans of the same data: the same patch and batch as nnU-Net's
    assert vismae["patch_size"] == nnunet["patch_size"] == list(shape)
    assert vismae["batch_size"] == nnunet["batch_size"] and vismae["parameters"] != nnunet["parameters"]
    assert vismae["step_s"] > 0 and vismae["step_cpu_s"] > 0 and vismae["precision"] == "fp32"
    assert swin3d["family"] == "swin3d" and swin3d["patch_size"] == nnunet["patch_size"]
    assert swin3d["batch_size"] == nnunet["batch_size"] and swin3d["precision"] == "fp32"
    assert swin3d["model_flops_per_s"] == pytest.approx(swin3d["flops_per_step"] / swin3d["step_s"])
    assert swin3d["flops_per_step"] > 3 * 2 * 2 * (16 * 24 * 24 // 8) * 12  # the patch embedding, forward and back
    report = markdown_report(
        {"machine": speed.machine(CPU), "matmul_flops_per_s": {"fp32": 1e11, "bf16": 1e9}, "volumes": volumes}
    )
    assert "3D step: pretrain cnn MAE / nnU-Net" in report and "3D loader crops/s" in report
    assert "3D fine-tune step fp32: VisMAE / nnU-Net" in report
    assert "3D pretrain cnn: model FLOP/s" in report and "3D pretrain swin3d: model FLOP/s" in report


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


def test_inference_gets_plain_weights_from_a_compiled_trainer_network(tmp_path, monkeypatch):
    """On CUDA nnU-Net compiles the trainer's network, whose weights' names then carry ``_orig_mod.``:
    the predictor gets them as nnU-Net's checkpoint holds them, for a network built as
    nnUNetv2_predict builds it, compiled only where nnUNet_compile says so."""
    tiny = SwinEncoderConfig(embed_dim=12, depths=(1, 1), num_heads=(3, 6), window_size=4)
    load = speed_fixtures.load_trainer

    def compiled_like_on_cuda(*args):
        trainer = load(*args)
        trainer.network = torch.compile(trainer.network)  # nnU-Net's initialize on CUDA (traced only when called)
        return trainer

    monkeypatch.setattr(speed_fixtures, "load_trainer", compiled_like_on_cuda)
    monkeypatch.delenv("nnUNet_compile", raising=False)
    with speed_fixtures.nnunet_folders(tmp_path):
        write_fingerprint(tmp_path, 32, 2)
        speed_fixtures.prepare_plans(tmp_path, size=32, num_train=2, num_unlabeled=0, encoder=tiny)
        for cls, plans in speed_fixtures.trainer_classes().values():
            predictor = speed_fixtures.predictor_for(cls, plans, CPU)
            weights = predictor.list_of_parameters[0]
            assert weights and not any(name.startswith("_orig_mod.") for name in weights)
            assert not isinstance(predictor.network, OptimizedModule)  # nnUNetv2_predict's default
            predictor.network.load_state_dict(weights)  # what the predictor does before each case
            monkeypatch.setenv("nnUNet_compile", "true")
            predictor = speed_fixtures.predictor_for(cls, plans, CPU)
            assert isinstance(predictor.network, OptimizedModule)
            predictor.network._orig_mod.load_state_dict(predictor.list_of_parameters[0])
            monkeypatch.delenv("nnUNet_compile")


def test_each_function_is_warmed_up_then_timed_in_turn():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    timing = StepTiming(warmup=3, repeats=4, statistic="median")
    peaks = speed_timing.warm_up(fns, CPU, timing)
    assert set(peaks) == {"a", "b"} and calls == ["a", "b"] * 3
    calls.clear()
    seconds = speed_timing.interleaved_seconds(fns, CPU, timing)
    assert calls == ["a", "b"] * 4 and all(wall >= 0 and cpu >= 0 for wall, cpu in seconds.values())


def test_pretraining_on_cuda_adds_a_gpu_sized_batch_and_times_as_the_device_does():
    cuda = speed.pretrain_configs(torch.device("cuda"))
    assert set(cuda) == {"vismae_224_b8", "default", "gpu_224_b256"}
    assert not any("--repeats" in flags for flags in cuda.values())  # the child's CUDA timing: median of 20
    cpu = speed.pretrain_configs(CPU)
    assert set(cpu) == {"vismae_224_b8", "default"} and cpu["default"] == ["--repeats", "2"]


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("Tesla V100-SXM2-32GB", None),
    ],
)
def test_datasheet_peaks_by_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert speed_timing.datasheet_bf16_flops(torch.device("cuda", 0)) == peak
    assert speed_timing.datasheet_bf16_flops(CPU) is None


PRETRAINED = {
    "batch_size": 256,
    "patch_size": 224,
    "precision": "bf16",
    "decoder": "swin",
    "peak_mb": 1000.0,
    "images_per_s": 1000.0,
    "flops_per_step": 1e12,
    "model_flops_per_s": 247e12,
    "loader_samples_per_s": 4000.0,
    "loader_vs_model": 4.0,
    "workers": 4,
    "timing": {"warmup": 5, "repeats": 20, "statistic": "median"},
}


@pytest.mark.parametrize("peak, expected", [(989e12, "25% of the datasheet's dense bf16 peak"), (None, "n/a")])
def test_report_gives_pretraining_flops_against_the_measured_matmul_and_the_datasheet(peak, expected):
    machine = {**speed.machine(CPU), "native_bf16": True, "nnUNet_compile": None}
    report = markdown_report(
        {
            "machine": machine,
            "matmul_flops_per_s": {"fp32": 400e12, "bf16": 741e12},
            "datasheet_bf16_flops_per_s": peak,
            "pretraining": {"gpu_224_b256": PRETRAINED},
        }
    )
    model_row = next(line for line in report.splitlines() if "gpu_224_b256: model FLOP/s" in line)
    assert "33% of bf16 matmul" in model_row and expected in model_row
    assert "median of 20 after 5 warm-up(s)" in report and "nnUNet_compile: unset" in report


def test_cuda_runs_with_cudnn_benchmark_as_nnunetv2_train_sets_it(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    speed.use_nnunet_cuda_settings(CPU)
    assert not torch.backends.cudnn.benchmark
    speed.use_nnunet_cuda_settings(torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


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


NNUNET_3D = {
    "batch_size": 2,
    "patch_size": [16, 32, 32],
    "parameters": 5_500_000,
    "precision": "fp32",
    "compiled": False,
    "step_s": 2.0,
    "step_cpu_s": 3.0,
    "peak_mb": 300.0,
    "timing": {"warmup": 1, "repeats": 3, "statistic": "best"},
}
CNN_3D = {**PRETRAINED, "patch_size": [16, 32, 32], "batch_size": 2, "precision": "fp32", "step_s": 2.4} | {
    "step_cpu_s": 3.3,
    "loader_vs_model": 2.5,
    "loader_samples_per_s": 2.1,
}
VOLUMES = {
    "finetuning": {
        "fp32": {"nnunet": NNUNET_3D, "vismae": {**NNUNET_3D, "step_s": 1.8, "step_cpu_s": 3.3, "peak_mb": 400.0}},
        "bf16": {"not_measured": "this CPU has no native bf16"},
    },
    "pretraining": {
        "cnn": CNN_3D,
        "swin3d": {**CNN_3D, "step_s": 4.0, "flops_per_step": 40e9, "model_flops_per_s": 10e9, "workers": 0},
    },
}


def test_report_gives_the_3d_rows_with_their_goals_after_the_2d_rows():
    machine = {**speed.machine(CPU), "native_bf16": False}
    matmul = {"fp32": 1e11, "bf16": 1e9}
    both = markdown_report(
        {"machine": machine, "matmul_flops_per_s": matmul, "pretraining": {"x": PRETRAINED}} | {"volumes": VOLUMES}
    )
    rows = both.splitlines()
    step = next(
        i for i, line in enumerate(rows) if line.startswith("| 3D step: pretrain cnn MAE / nnU-Net | 2.400 s / 2.000 s")
    )
    assert step > max(i for i, line in enumerate(rows) if line.startswith("| pretrain x"))
    assert (
        "batch 2, patch 16x32x32; fp32 / fp32, eager" in rows[step] and "CPU time 3.30 s / 3.00 s = 1.10" in rows[step]
    )
    assert rows[step].endswith("| met: ratio 1.20 (goal <= 1.3) |")
    assert rows[step + 1].startswith("| 3D loader crops/s | 2.1 |") and "4 workers (the default)" in rows[step + 1]
    assert rows[step + 1].endswith("| GAP: 2.5x what the model consumes (goal >= 3x) |")
    failed = {**VOLUMES, "pretraining": {"cnn": {"error": "exit 2: no plans"}}}
    report = markdown_report({"machine": machine, "matmul_flops_per_s": matmul, "volumes": failed})
    assert "| 3D pretrain cnn MAE | failed | exit 2: no plans | not measured |" in report
    assert "3D" not in markdown_report(
        {"machine": machine, "matmul_flops_per_s": matmul, "pretraining": {"x": PRETRAINED}}
    )


def test_report_gives_the_3d_fine_tuning_ratio_and_each_3d_pretraining_familys_flops():
    matmul = {"fp32": 40e9, "bf16": 80e9}
    report = markdown_report({"machine": speed.machine(CPU), "matmul_flops_per_s": matmul, "volumes": VOLUMES})
    rows = report.splitlines()
    (finetune,) = [line for line in rows if line.startswith("| 3D fine-tune step fp32: VisMAE / nnU-Net |")]
    assert "1.800 s / 2.000 s" in finetune and "batch 2, patch 16x32x32" in finetune
    assert "CPU time 3.30 s / 3.00 s = 1.10" in finetune and finetune.endswith("| met: ratio 0.90 (goal <= 1) |")
    assert "| 3D fine-tune step bf16 | not measured | this CPU has no native bf16 | - |" in report
    step = next(i for i, line in enumerate(rows) if line.startswith("| 3D step: pretrain cnn MAE / nnU-Net"))
    assert rows.index(finetune) < step
    cnn, swin3d = rows[step + 2], rows[step + 3]  # after the loader row, the swin3d family's next to the cnn's
    assert cnn.startswith("| 3D pretrain cnn: model FLOP/s | 247000.0 GFLOP/s |")
    assert swin3d.startswith("| 3D pretrain swin3d: model FLOP/s | 10.0 GFLOP/s |")
    assert "4.000 s a step at batch 2, patch 16x32x32, fp32" in swin3d and "40.0 GFLOP per step" in swin3d
    assert "25% of fp32 matmul" in swin3d and swin3d.endswith("| GAP: 12% of bf16 matmul (goal >= 50%) |")
    failed = {**VOLUMES, "pretraining": {**VOLUMES["pretraining"], "swin3d": {"error": "exit 2: bad --window"}}}
    report = markdown_report({"machine": speed.machine(CPU), "matmul_flops_per_s": matmul, "volumes": failed})
    assert "| 3D pretrain swin3d MAE | failed | exit 2: bad --window | not measured |" in report
    assert "3D pretrain swin3d: model FLOP/s" not in report and "3D pretrain cnn: model FLOP/s" in report


def test_2d_is_the_default_and_3d_fullres_measures_only_the_volumes(tmp_path, monkeypatch):
    measured = []
    for name in ("prepare_volume_plans", "measure_pretraining", "measure_finetuning"):
        monkeypatch.setattr(speed, name, lambda *a, name=name, **k: measured.append(name) or {})
    monkeypatch.setattr(speed, "measure_inference", lambda *a: measured.append("measure_inference") or {})
    monkeypatch.setattr(speed, "measure_volumes", lambda *a: measured.append("measure_volumes") or {})
    monkeypatch.setattr(speed, "matmul_flops", lambda *a: 1.0)
    monkeypatch.setattr(speed, "prepare_plans", lambda *a: measured.append("prepare_plans") or tmp_path)
    results = speed.run_speed(CPU, tmp_path)
    assert "volumes" not in results and "measure_volumes" not in measured and "measure_inference" in measured
    measured.clear()
    results = speed.run_speed(CPU, tmp_path, ("3d_fullres",))
    assert measured == ["prepare_volume_plans", "measure_volumes"] and "pretraining" not in results
