"""``nnUNetv2_vismae_speed``: throughput and memory, as ratios taken in one run on one machine.

The yardstick is the machine's own matrix-multiply FLOP/s (fp32 and bf16). Pretraining is measured
by ``python -m pretrain.speed`` in a child process per configuration (it builds the MAE, optimizer
and loader exactly as ``nnUNetv2_vismae_pretrain`` does; one process each, so peak memory is one
configuration's). Fine-tuning and inference use nnU-Net's real trainers (``nnUNetTrainer`` against
``VisMAETrainer``) and predictor on plans that nnU-Net's own planner makes for a small phantom
dataset (``fixtures``), so both networks see the same patch and batch size; ``timing``
times them. With ``-c 3d_fullres`` (alone or next to ``2d``) the same fine-tuning comparison runs on 3d_fullres
plans of tiny volume phantoms (Swin3dUNet against nnU-Net's 3D U-Net), and the MAE pretraining steps of the
cnn family and of the 3D VisMAE family, with the loader of 3D crops, are measured on the same plans
(``measure_volumes``). Nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import torch
from torch._dynamo import OptimizedModule

from nnunetv2_vismae.device import native_bf16, run_forward_in_bf16, step_timing
from nnunetv2_vismae.errors import UserError
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.atomic import write_bytes_atomic, write_json_atomic
from nnunetv2_vismae.io.folders import make_output_folder
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D
from nnunetv2_vismae.phantoms.generator import UNLABELED_FOLDER
from nnunetv2_vismae.planning.families import FAMILY_WITHOUT_CHECKPOINT, NNUNET_NETWORK_FAMILY
from nnunetv2_vismae.speed.fixtures import (
    PLANS,
    VOLUME_DATASET_ID,
    load_trainer,
    nnunet_folders,
    phantom_case,
    predictor_for,
    prepare_plans,
    prepare_volume_plans,
    synthetic_batch,
    trainer_classes,
)
from nnunetv2_vismae.speed.report import nnunet_step
from nnunetv2_vismae.speed.timing import (
    cpu_seconds,
    datasheet_bf16_flops,
    interleaved_seconds,
    matmul_flops,
    warm_up,
)

# VIS-MAE's recipe (with the command's default decoder, VIS-MAE's), and the pretraining command's defaults
PRETRAIN_CONFIGS = {
    "vismae_224_b8": ["--patch-size", "224", "--batch-size", "8", "--mask-ratio", "0.75"],
    "default": [],
}
# on CUDA also a batch that keeps a large GPU busy (batch 8 or 32 leaves an H200 mostly idle)
GPU_PRETRAIN_CONFIGS = {
    "gpu_224_b256": ["--patch-size", "224", "--batch-size", "256", "--mask-ratio", "0.75"],
}
# on a CPU two timed steps of the defaults' batch 32 instead of three keep the whole run within minutes
CPU_PRETRAIN_TIMING = {"default": ["--repeats", "2"]}


def pretrain_configs(device: torch.device) -> dict[str, list[str]]:
    if device.type == "cuda":
        return {**PRETRAIN_CONFIGS, **GPU_PRETRAIN_CONFIGS}
    return {name: flags + CPU_PRETRAIN_TIMING.get(name, []) for name, flags in PRETRAIN_CONFIGS.items()}


# -------------------------------------------------------------------------------- pretraining
def measure_pretraining(
    unlabeled: Path | None,
    device: torch.device,
    work: Path,
    configs: dict | None = None,
    extra: list[str] | None = None,
) -> dict:
    """One ``python -m pretrain.speed`` child per configuration; its JSON, or the error it gave. ``unlabeled``:
    the images (``-i``), None where a configuration's flags name its data."""
    results = {}
    for name, flags in (configs or pretrain_configs(device)).items():
        out, log = work / f"pretrain_{name}.json", work / f"pretrain_{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "pretrain.speed",
            "--json",
            str(out),
            *(["-i", str(unlabeled)] if unlabeled else []),
            "-device",
            device.type,
            *flags,
            *(extra or []),
        ]
        with open(log, "w") as handle:
            code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)
        if code != 0 or not out.is_file():
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            results[name] = {"error": f"exit {code}: {tail[0]}"}
        else:
            results[name] = json.loads(out.read_text())
    return results


# -------------------------------------------------------------------------------- fine-tuning
def cpu_bf16(enabled: bool):
    """Our trainers' CPU bf16 switch (``nnunetv2_vismae.device``) set for the duration; the environment
    is restored on exit, even on error."""
    return mock.patch.dict(os.environ, {"nnUNet_vismae_cpu_bf16": "1" if enabled else "0"})


def finetuning_precisions(device: torch.device) -> dict[str, str | None]:
    """Precision -> None if measured, else why not. On CUDA each trainer trains with its own AMP
    (``step_precision``)."""
    if device.type == "cuda":
        return {"amp": None}
    if native_bf16(device):
        return {"fp32": None, "bf16": None}
    return {
        "fp32": None,
        "bf16": "this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 is emulated, "
        "tens of times slower than fp32, and the trainers run fp32 here",
    }


def step_precision(trainer, precision: str) -> str:
    """What a trainer's ``train_step`` computes in: on CUDA nnU-Net's fp16 autocast with its GradScaler, or
    bf16 autocast without one (ours, where the GPU has native bf16); elsewhere ``precision``."""
    if trainer.device.type != "cuda":
        return precision
    return "fp16 + GradScaler" if trainer.grad_scaler is not None else "bf16"


def training_steps(
    device: torch.device, precision: str, batch_size: int | None, configuration: str
) -> tuple[dict, dict]:
    """Each trainer's ``train_step`` on a synthetic batch, ready to call, and what it trains."""
    steps, info = {}, {}
    for name, (cls, plans) in trainer_classes().items():
        trainer = load_trainer(cls, plans, device, configuration)
        if precision == "bf16" and name == "nnunet":
            run_forward_in_bf16(trainer.network)  # equal precision: nnU-Net itself runs fp32 on CPU
        steps[name], info[name] = training_step(trainer, precision, batch_size)
    return steps, info


def training_step(trainer, precision: str, batch_size: int | None) -> tuple[functools.partial, dict]:
    """A trainer's ``train_step`` on a synthetic batch (of ``batch_size``, default the plans'), ready to call, and
    what it trains."""
    trainer.network.train()
    batch_size = batch_size or trainer.configuration_manager.batch_size
    batch = synthetic_batch(trainer, batch_size)
    return functools.partial(trainer.train_step, batch), {
        "batch_size": batch_size,
        "patch_size": list(trainer.configuration_manager.patch_size),
        "parameters": sum(p.numel() for p in trainer.network.parameters()),
        "precision": step_precision(trainer, precision),
        "compiled": isinstance(trainer.network, OptimizedModule),  # nnU-Net's choice (nnUNet_compile)
    }


def measure_finetuning(
    device: torch.device, batch_size: int | None = 8, repeats: int = 3, configuration: str = CONFIGURATION_2D
) -> dict:
    """Training-step seconds (forward, loss, backward, optimizer) of both trainers at equal precision
    (on CUDA each with its own AMP), as ``nnUNetv2_train`` sets them up on ``configuration`` of their plans:
    compiled where nnU-Net compiles. ``batch_size``: None for the plans' own. ``repeats``: timed steps on a CPU
    (on CUDA ``step_timing``'s)."""
    timing = step_timing(device, repeats)
    results = {}
    for precision, reason in finetuning_precisions(device).items():
        if reason:
            results[precision] = {"not_measured": reason}
            continue
        with cpu_bf16(precision == "bf16"):
            steps, info = training_steps(device, precision, batch_size, configuration)
            peaks = warm_up(steps, device, timing)
            seconds = interleaved_seconds(steps, device, timing)
        results[precision] = {
            name: {
                **info[name],
                "step_s": seconds[name][0],
                "step_cpu_s": cpu_seconds(seconds[name], device),
                "peak_mb": peaks[name],
                "timing": asdict(timing),
            }
            for name in steps
        }
    return results


# ------------------------------------------------------------------------------------ volumes
# VIS-MAE's family on volumes: the one whose network nnUNetv2_vismae_plan -c 3d_fullres plans (Swin3dUNet)
VISMAE_3D_FAMILY = FAMILY_WITHOUT_CHECKPOINT[3]
VOLUME_FAMILIES = (NNUNET_NETWORK_FAMILY, VISMAE_3D_FAMILY)


def measure_volumes(device: torch.device, work: Path, repeats: int = 5, vismae_flags: tuple[str, ...] = ()) -> dict:
    """The 3D rows, on the 3d_fullres plans of the volume phantoms (``prepare_volume_plans``): ``measure_finetuning``
    there (VisMAETrainer's Swin3dUNet against nnUNetTrainer, in turn, at the plans' patch and batch), then the MAE
    pretraining step of the cnn family (the MAE of nnU-Net's network) and of VIS-MAE's 3D family (a
    ``python -m pretrain.speed`` child each) on the same plans, patch and batch; ``vismae_flags``: more
    pretraining flags for the latter (the tests' tiny encoder).
    ``repeats``: timed steps on a CPU (on CUDA ``step_timing``'s); a pretraining step is timed in its own process,
    so a few more than 2D's three let the best of them find a quiet moment."""
    finetuning = measure_finetuning(device, None, repeats, CONFIGURATION_3D)
    nnunet = nnunet_step(finetuning)
    configs = {family: volume_pretrain_flags(family, nnunet, device, repeats) for family in VOLUME_FAMILIES}
    # both read the same crops: the loader is measured once, with the default workers and more batches than 2D's
    # 8 (tiny crops); the VisMAE child times its step only
    configs[NNUNET_NETWORK_FAMILY] += ["--loader-batches", "32"]
    configs[VISMAE_3D_FAMILY] += ["--workers", "0", "--loader-batches", "1", *vismae_flags]
    return {"finetuning": finetuning, "pretraining": measure_pretraining(None, device, work, configs)}


def volume_pretrain_flags(family: str, nnunet: dict, device: torch.device, repeats: int) -> list[str]:
    """``nnUNetv2_vismae_pretrain``'s flags for ``family`` on the same plans, patch and batch as nnU-Net's step;
    fp32 on a CPU, as nnU-Net trains there (on CUDA each its own precision)."""
    flags = ["--encoder", family, "-d", str(VOLUME_DATASET_ID), "-c", CONFIGURATION_3D, "-p", PLANS]
    flags += ["--patch-size", *map(str, nnunet["patch_size"]), "--batch-size", str(nnunet["batch_size"])]
    return flags + (["--repeats", str(repeats), "--precision", "fp32"] if device.type == "cpu" else [])


# ---------------------------------------------------------------------------------- inference
def measure_inference(device: torch.device, repeats: int = 2, case_size: int | None = None) -> dict:
    """Seconds per case through nnU-Net's predictor (preprocessing, sliding window with test-time
    mirroring, export to a segmentation) for both trainers' networks, on the same phantom case
    (default: twice the patch size per axis, 3 x 3 overlapping tiles). The predictor compiles as
    ``nnUNetv2_predict`` does: only with nnUNet_compile=true. ``repeats``: timed cases on a CPU."""
    timing = step_timing(device, repeats)
    with cpu_bf16(False):  # inference rebuilds the network: fp32 on CPU
        predictors = {name: predictor_for(cls, plans, device) for name, (cls, plans) in trainer_classes().items()}
        image, properties = phantom_case(case_size or 2 * max(predictors["nnunet"].configuration_manager.patch_size))
        cases = {
            name: functools.partial(p.predict_single_npy_array, image, properties) for name, p in predictors.items()
        }
        peaks = warm_up(cases, device, timing)
        seconds = interleaved_seconds(cases, device, timing)
    return {
        name: {
            "case_s": seconds[name][0],
            "case_cpu_s": cpu_seconds(seconds[name], device),
            "peak_mb": peaks[name],
            "case_shape": list(image.shape[2:]),
            "mirroring_axes": list(p.allowed_mirroring_axes or []),
            "compiled": isinstance(p.network, OptimizedModule),
            "timing": asdict(timing),
        }
        for name, p in predictors.items()
    }


# ------------------------------------------------------------------------------------ driver
def machine(device: torch.device) -> dict:
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (f"cpu, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    )
    return {
        "device": name,
        "torch": torch.__version__,
        "native_bf16": native_bf16(device),
        "nnUNet_compile": os.environ.get("nnUNet_compile"),  # None: nnU-Net's default (training compiles on CUDA)
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "load_average_at_start": list(os.getloadavg()),
    }


def use_nnunet_cuda_settings(device: torch.device) -> None:
    """cuDNN autotuning as ``nnUNetv2_train`` (and nnU-Net's predictor) switch it on for CUDA."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def run_speed(device: torch.device, work: Path, configurations: tuple[str, ...] = (CONFIGURATION_2D,)) -> dict:
    """The yardstick, then the rows of each configuration: 2d (VIS-MAE's and the defaults' pretraining,
    fine-tuning and inference against nnU-Net's 2D U-Net) and 3d_fullres (``measure_volumes``)."""
    use_nnunet_cuda_settings(device)
    results = {
        "machine": machine(device),
        "matmul_flops_per_s": {
            "fp32": matmul_flops(device, torch.float32),
            "bf16": matmul_flops(device, torch.bfloat16),
        },
        "datasheet_bf16_flops_per_s": datasheet_bf16_flops(device),
    }
    with nnunet_folders(work):
        if CONFIGURATION_2D in configurations:
            raw = prepare_plans(work)
            results["pretraining"] = measure_pretraining(raw / UNLABELED_FOLDER, device, work)
            results["finetuning"] = measure_finetuning(device)
            results["inference"] = measure_inference(device)
        if CONFIGURATION_3D in configurations:
            prepare_volume_plans(work)
            results["volumes"] = measure_volumes(device, work)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


@console_script("nnUNetv2_vismae_speed")
def main(argv=None):
    from nnunetv2_vismae.speed.report import markdown_report

    parser = OneSentenceParser(
        prog="nnUNetv2_vismae_speed",
        description=(
            "Measure pretraining, data loading, fine-tuning and inference speed against the machine's matmul "
            "FLOP/s, in one run; writes speed.json and speed.md to -o. Takes about 2 minutes on an idle 2-core CPU."
        ),
    )
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    parser.add_argument("-o", default="vismae_speed", help="output folder (default: ./vismae_speed)")
    parser.add_argument(
        "-c",
        nargs="+",
        default=[CONFIGURATION_2D],
        choices=[CONFIGURATION_2D, CONFIGURATION_3D],
        help=f"what to measure: {CONFIGURATION_2D} (VIS-MAE against nnU-Net's 2D U-Net, the default) and/or "
        f"{CONFIGURATION_3D} (VisMAE's 3D fine-tuning step and the MAE pretraining steps and 3D loader against "
        "nnU-Net's 3D training step, on tiny volumes: a few minutes more on a CPU)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("-device cuda was given but torch sees no CUDA device; use -device cpu.")
    out = Path(args.o)
    make_output_folder(out)  # before minutes of measuring
    with tempfile.TemporaryDirectory(prefix="vismae_speed_") as work:
        results = run_speed(torch.device(args.device), Path(work), tuple(args.c))
    write_json_atomic(out / "speed.json", results)
    table = markdown_report(results)
    write_bytes_atomic(out / "speed.md", table.encode())
    print(table)
    print(f"Wrote {out / 'speed.json'} and {out / 'speed.md'}.")


if __name__ == "__main__":
    sys.exit(main())
