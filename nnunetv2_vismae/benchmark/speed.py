"""``nnUNetv2_vismae_speed``: throughput and memory, as ratios taken in one run on one machine.

The yardstick is the machine's own matrix-multiply FLOP/s (fp32 and bf16). Pretraining is measured
by ``python -m pretrain.speed`` in a child process per configuration (it builds the MAE, optimizer
and loader exactly as ``nnUNetv2_vismae_pretrain`` does; one process each, so peak memory is one
configuration's). Fine-tuning and inference use nnU-Net's real trainers (``nnUNetTrainer`` against
``VisMAETrainer``) and predictor on plans that nnU-Net's own planner makes for a small phantom
dataset, so both networks see the same patch and batch size. Nothing is downloaded.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from nnunetv2_vismae.architectures import SwinEncoderConfig
from nnunetv2_vismae.demo.phantoms import PIXEL_SPACING_MM, UNLABELED_FOLDER, generate_dataset, make_case
from nnunetv2_vismae.device import native_bf16
from nnunetv2_vismae.errors import UserError
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.atomic import write_bytes_atomic, write_json_atomic
from nnunetv2_vismae.io.folders import check_output_folder
from nnunetv2_vismae.training.env import ext_trainer_value

DATASET_ID = 801
PLANS, VISMAE_PLANS = "nnUNetPlans", "nnUNetVisMAEPlans"
# VIS-MAE's recipe, and the pretraining command's defaults (no model flags; two timed steps of
# batch 32 instead of three keep the whole run within minutes on a 2-core CPU)
PRETRAIN_CONFIGS = {"vismae_224_b8": ["--patch-size", "224", "--batch-size", "8", "--mask-ratio", "0.75",
                                      "--decoder", "swin"],
                    "default": ["--repeats", "2"]}


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so that RSS growth measures the next block only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak extra memory while the block runs: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        trim_heap()
        self._base, self._running = self._rss_mb(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak_mb = max(self.peak_mb, self._rss_mb() - self._base)
            time.sleep(0.005)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2 ** 20
        else:
            self._running = False
            self._thread.join()


def interleaved_seconds(fns: dict, device: torch.device, repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each function, called in turn ``repeats`` times so that a change
    in the machine's load hits all of them alike. CPU seconds are this process's (all threads):
    other processes on a shared CPU disturb them less than the wall time."""
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def cpu_seconds(times: tuple[float, float], device: torch.device) -> float | None:
    """The CPU seconds of ``interleaved_seconds``; on CUDA they measure only the host, so none."""
    return times[1] if device.type == "cpu" else None


def first_call_peak_mb(fns: dict, device: torch.device) -> dict[str, float]:
    """Each function called once (the warm-up), with the peak memory it added."""
    peaks = {}
    for name, fn in fns.items():
        with PeakMemory(device) as memory:
            fn()
        peaks[name] = memory.peak_mb
    return peaks


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int | None = None) -> float:
    """FLOP/s of an n x n matmul (best of a few); emulated bf16 on CPU gets a smaller n to stay quick."""
    if n is None:
        n = 8192 if device.type == "cuda" else (1024 if dtype == torch.float32 or native_bf16(device) else 256)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up
    return 2 * n ** 3 / interleaved_seconds({"matmul": lambda: a @ b}, device, repeats=5)["matmul"][0]


# ----------------------------------------------------------------------------------- data set
@contextmanager
def nnunet_folders(root: Path):
    """nnU-Net's environment variables pointing under ``root`` for the duration (read lazily by nnU-Net)."""
    names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    saved = {k: os.environ.get(k) for k in (*names, "nnUNet_extTrainer")}
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(root / name)
    os.environ["nnUNet_extTrainer"] = ext_trainer_value(saved["nnUNet_extTrainer"])
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def prepare_plans(root: Path, size: int = 128, num_train: int = 8, num_unlabeled: int = 64,
                  encoder: SwinEncoderConfig | None = None) -> Path:
    """Phantoms; nnU-Net's fingerprint (unless one is already there), plans and, in this process,
    preprocessing of the training cases; VisMAE plans derived from them. Returns the raw folder."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, \
        plan_experiment_dataset

    from nnunetv2_vismae.planning.vismae_plans import derive_vismae_plans, load_plans

    raw = generate_dataset(root / "nnUNet_raw", DATASET_ID, num_train=num_train, num_test=0,
                           num_unlabeled=num_unlabeled, size=size)
    folder = root / "nnUNet_preprocessed" / raw.name
    if not (folder / "dataset_fingerprint.json").is_file():
        extract_fingerprint_dataset(DATASET_ID, num_processes=1, check_dataset_integrity=False, verbose=False)
    plan_experiment_dataset(DATASET_ID)
    preprocess_training_cases(raw, folder)
    vismae = derive_vismae_plans(load_plans(folder, PLANS), VISMAE_PLANS, encoder or SwinEncoderConfig(), "conv")
    write_json_atomic(folder / f"{VISMAE_PLANS}.json", vismae)
    return raw


def preprocess_training_cases(raw: Path, folder: Path) -> None:
    """nnU-Net's 2d preprocessing of every training case, in this process (its pool takes longer to start
    than the work); trainers need the preprocessed folder to exist even when fed synthetic batches."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(str(folder / f"{PLANS}.json"))
    configuration = plans.get_configuration("2d")
    dataset_json = json.loads((raw / "dataset.json").read_text())
    out = folder / configuration.data_identifier
    out.mkdir(exist_ok=True)
    for image in sorted((raw / "imagesTr").iterdir()):
        case = image.name[:-len("_0000" + dataset_json["file_ending"])]
        DefaultPreprocessor(verbose=False).run_case_save(
            str(out / case), [str(image)], str(raw / "labelsTr" / (case + dataset_json["file_ending"])),
            plans, configuration, dataset_json)


def load_trainer(trainer_class, plans_name: str, device: torch.device):
    folder = Path(os.environ["nnUNet_preprocessed"]) / f"Dataset{DATASET_ID:03d}_VisMAEPhantoms"
    plans = json.loads((folder / f"{plans_name}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans["continue_training"] = False  # what nnUNetv2_train adds before building a trainer
    trainer = trainer_class(plans, "2d", 0, dataset_json, device)
    trainer.initialize()
    return trainer


def trainer_classes() -> dict:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunetv2_vismae.training import VisMAETrainer

    return {"nnunet": (nnUNetTrainer, PLANS), "vismae": (VisMAETrainer, VISMAE_PLANS)}


# -------------------------------------------------------------------------------- pretraining
def measure_pretraining(unlabeled: Path, device: torch.device, work: Path, configs: dict | None = None,
                        extra: list[str] | None = None) -> dict:
    """One ``python -m pretrain.speed`` child per configuration; its JSON, or the error it gave."""
    results = {}
    for name, flags in (configs or PRETRAIN_CONFIGS).items():
        out, log = work / f"pretrain_{name}.json", work / f"pretrain_{name}.log"
        cmd = [sys.executable, "-m", "pretrain.speed", "--json", str(out), "-i", str(unlabeled),
               "-device", device.type, *flags, *(extra or [])]
        with open(log, "w") as handle:
            code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)
        if code != 0 or not out.is_file():
            tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
            results[name] = {"error": f"exit {code}: {tail[0]}"}
        else:
            results[name] = json.loads(out.read_text())
    return results


# -------------------------------------------------------------------------------- fine-tuning
def synthetic_batch(trainer, batch_size: int) -> dict:
    """A batch shaped as nnU-Net's loader makes it: data and one target per deep-supervision scale."""
    patch = trainer.configuration_manager.patch_size
    data = torch.randn(batch_size, trainer.num_input_channels, *patch)
    scales = trainer._get_deep_supervision_scales() or [[1.0] * len(patch)]
    labels = len(trainer.label_manager.all_labels)
    targets = [torch.randint(0, labels, (batch_size, 1, *[round(p * s) for p, s in zip(patch, scale)])).float()
               for scale in scales]
    return {"data": data, "target": targets if trainer.enable_deep_supervision else targets[0]}


def finetuning_precisions(device: torch.device) -> dict[str, str | None]:
    """Precision -> None if measured, else why not. On CUDA nnU-Net always trains with its AMP."""
    if device.type == "cuda":
        return {"amp": None}
    if native_bf16(device):
        return {"fp32": None, "bf16": None}
    return {"fp32": None, "bf16": "this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 is emulated, "
                                  "tens of times slower than fp32, and the trainers run fp32 here"}


def measure_finetuning(device: torch.device, batch_size: int = 8, repeats: int = 3) -> dict:
    """Training-step seconds (forward, loss, backward, optimizer) of both trainers at equal precision."""
    from nnunetv2_vismae.device import run_forward_in_bf16

    results = {}
    for precision, reason in finetuning_precisions(device).items():
        if reason:
            results[precision] = {"not_measured": reason}
            continue
        os.environ["nnUNet_vismae_cpu_bf16"] = "1" if precision == "bf16" else "0"
        steps, info = {}, {}
        for name, (cls, plans) in trainer_classes().items():
            trainer = load_trainer(cls, plans, device)
            if precision == "bf16" and name == "nnunet":
                run_forward_in_bf16(trainer.network)  # equal precision: nnU-Net itself runs fp32 on CPU
            trainer.network.train()
            batch = synthetic_batch(trainer, batch_size)
            steps[name] = functools.partial(trainer.train_step, batch)
            info[name] = {"batch_size": batch_size, "patch_size": list(trainer.configuration_manager.patch_size),
                          "parameters": sum(p.numel() for p in trainer.network.parameters())}
        peaks = first_call_peak_mb(steps, device)
        seconds = interleaved_seconds(steps, device, repeats)
        results[precision] = {name: {**info[name], "step_s": seconds[name][0], "step_cpu_s": cpu_seconds(seconds[name], device),
                                     "peak_mb": peaks[name]} for name in steps}
    os.environ.pop("nnUNet_vismae_cpu_bf16", None)
    return results


# ---------------------------------------------------------------------------------- inference
def phantom_case(size: int) -> tuple[np.ndarray, dict]:
    """One phantom image, as nnU-Net's SimpleITK reader returns a 2D image: (1, 1, H, W) and spacing."""
    image, _ = make_case(np.random.default_rng(7), size, "ct")
    return image[None, None].astype(np.float32), {"spacing": [999.0, PIXEL_SPACING_MM, PIXEL_SPACING_MM]}


def predictor_for(cls, plans: str, device: torch.device):
    """nnU-Net's predictor around a freshly built network of the trainer, set up as inference sets it up."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer = load_trainer(cls, plans, device)
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets the mirroring axes
    trainer.set_deep_supervision_enabled(False)
    predictor = nnUNetPredictor(device=device, allow_tqdm=False, verbose=False, verbose_preprocessing=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()], trainer.dataset_json, cls.__name__,
                                    trainer.inference_allowed_mirroring_axes)
    return predictor


def measure_inference(device: torch.device, repeats: int = 2, case_size: int | None = None) -> dict:
    """Seconds per case through nnU-Net's predictor (preprocessing, sliding window with test-time
    mirroring, export to a segmentation) for both trainers' networks, on the same phantom case
    (default: twice the patch size per axis, 3 x 3 overlapping tiles)."""
    os.environ["nnUNet_vismae_cpu_bf16"] = "0"  # inference rebuilds the network: fp32 on CPU
    predictors = {name: predictor_for(cls, plans, device) for name, (cls, plans) in trainer_classes().items()}
    image, properties = phantom_case(case_size or 2 * max(predictors["nnunet"].configuration_manager.patch_size))
    cases = {name: functools.partial(p.predict_single_npy_array, image, properties) for name, p in predictors.items()}
    peaks = first_call_peak_mb(cases, device)
    seconds = interleaved_seconds(cases, device, repeats)
    os.environ.pop("nnUNet_vismae_cpu_bf16", None)
    return {name: {"case_s": seconds[name][0], "case_cpu_s": cpu_seconds(seconds[name], device), "peak_mb": peaks[name],
                   "case_shape": list(image.shape[2:]),
                   "mirroring_axes": list(p.allowed_mirroring_axes or [])} for name, p in predictors.items()}


# ------------------------------------------------------------------------------------ driver
def machine(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    return {"device": name, "torch": torch.__version__, "native_bf16": native_bf16(device),
            "load_average_at_start": list(os.getloadavg())}


def run_speed(device: torch.device, work: Path) -> dict:
    results = {"machine": machine(device),
               "matmul_flops_per_s": {"fp32": matmul_flops(device, torch.float32),
                                      "bf16": matmul_flops(device, torch.bfloat16)}}
    with nnunet_folders(work):
        raw = prepare_plans(work)
        results["pretraining"] = measure_pretraining(raw / UNLABELED_FOLDER, device, work)
        results["finetuning"] = measure_finetuning(device)
        results["inference"] = measure_inference(device)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


@console_script("nnUNetv2_vismae_speed")
def main(argv=None):
    from nnunetv2_vismae.benchmark.speed_report import markdown_report

    parser = OneSentenceParser(prog="nnUNetv2_vismae_speed", description=(
        "Measure pretraining, data loading, fine-tuning and inference speed against the machine's matmul "
        "FLOP/s, in one run; writes speed.json and speed.md to -o. Takes about 2 minutes on an idle 2-core CPU."))
    parser.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    parser.add_argument("-o", default="vismae_speed", help="output folder (default: ./vismae_speed)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("-device cuda was given but torch sees no CUDA device; use -device cpu.")
    out = Path(args.o)
    check_output_folder(out)  # before minutes of measuring
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vismae_speed_") as work:
        results = run_speed(torch.device(args.device), Path(work))
    write_json_atomic(out / "speed.json", results)
    table = markdown_report(results)
    write_bytes_atomic(out / "speed.md", table.encode())
    print(table)
    print(f"Wrote {out / 'speed.json'} and {out / 'speed.md'}.")


if __name__ == "__main__":
    sys.exit(main())
