"""Devices and reduced precision: the one place that picks a device, decides where bf16 runs and how
a step on it is timed.

On CUDA our fine-tuning trainers run the network under bf16 autocast where the GPU computes bf16
natively (Ampere and later), without nnU-Net's GradScaler: bf16 has fp32's exponent range, so
gradients do not underflow. Older GPUs keep nnU-Net's fp16 autocast and GradScaler. fp32 matmuls
outside autocast use TF32 on CUDA. On CPU nnU-Net runs fp32; there we run the network's forward
under bf16 autocast when the CPU has native bf16 (oneDNN reports it: AVX512-BF16 or AMX), where it
is several times faster. Without native bf16 it is emulated and about ten times slower than fp32
(measured on an AMD EPYC without AVX512), so fp32 stays. ``nnUNet_vismae_cpu_bf16=1`` or ``=0``
overrides the CPU detection. ``nnUNet_vismae_cpu_threads=N`` sets our trainers' torch threads on CPU
(``nnUNetv2_train`` takes every core, which starves trainings run side by side).
"""

from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass

import torch
from torch import nn

from nnunetv2_vismae.errors import UserError


class DeviceError(UserError):
    """A -device value this machine cannot honour."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu`` or ``cuda`` (the ``local_rank``-th GPU, made current) as a torch device."""
    if name not in ("cpu", "cuda"):
        raise DeviceError(f"-device must be 'cpu' or 'cuda', got {name!r}.")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError("-device cuda was requested but no CUDA device is available; use -device cpu.")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def configure_cuda_speed(device: torch.device) -> None:
    """On CUDA: fp32 matmuls on TF32 tensor cores (torch runs convolutions in TF32 by default already) and cuDNN's
    autotuner, which picks the fastest convolution algorithm once per input shape (training shapes are
    fixed, so it pays after the first step). Process-wide; nothing changes on CPU."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True


CPU_THREADS = "nnUNet_vismae_cpu_threads"


def cpu_share(parallel: int) -> int:
    """Torch threads for each of ``parallel`` CPU trainings at once: this process's cores split evenly."""
    return max(1, len(os.sched_getaffinity(0)) // parallel)


def apply_cpu_threads(device: torch.device) -> None:
    """On CPU, the thread count ``nnUNet_vismae_cpu_threads`` asks for, if it is set."""
    value = os.environ.get(CPU_THREADS)
    if value is None or device.type != "cpu":
        return
    cores = os.cpu_count() or 1
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses; more threads than cores
    # gain nothing, and 100000 crash torch
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= cores):
        raise DeviceError(
            f"{CPU_THREADS} must be a whole number from 1 to {cores} (this machine's cores), got {value!r}."
        )
    torch.set_num_threads(int(value))


def visible_gpus() -> list[str]:
    """The GPUs this process may give to the processes it starts, as CUDA_VISIBLE_DEVICES names them
    (indices or UUIDs): that variable's entries when it is set, else every device torch sees."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        return [gpu.strip() for gpu in value.split(",") if gpu.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def cpu_has_native_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cuda_has_native_bf16() -> bool:
    """The current GPU computes bf16 natively (compute capability 8 and later); torch's default check
    also counts emulation, which is slower than fp16."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def native_bf16(device: torch.device) -> bool:
    """bf16 runs natively: on CUDA from Ampere on; on CPU only with AVX512-BF16/AMX (oneDNN's check)."""
    if device.type == "cuda":
        return cuda_has_native_bf16()
    return device.type != "cpu" or cpu_has_native_bf16()


def bf16_autocast(device: torch.device) -> bool:
    """Whether our fine-tuning trainers run the network under bf16 autocast (see the module): on CUDA
    where bf16 is native, on CPU where ``cpu_bf16_enabled``."""
    return native_bf16(device) if device.type == "cuda" else cpu_bf16_enabled(device)


def fused_adamw(device: torch.device) -> bool:
    """Use torch's fused AdamW kernel: one pass over all parameters instead of a loop of small ops, with the
    same updates; torch has it for CPU and CUDA."""
    return device.type in ("cpu", "cuda")


def cpu_bf16_enabled(device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    override = os.environ.get("nnUNet_vismae_cpu_bf16")
    return cpu_has_native_bf16() if override is None else override != "0"


def _to_float(output):
    if isinstance(output, (list, tuple)):
        return type(output)(o.float() for o in output)
    return output.float()


def run_forward_in_bf16(module: nn.Module, device: torch.device = torch.device("cpu")) -> nn.Module:
    """Make ``module(x)`` compute under bf16 autocast on ``device`` and return fp32 outputs for the loss.

    Patches the instance's ``forward`` so parameter names, ``state_dict`` and the attributes
    nnU-Net touches (``decoder.deep_supervision``) stay exactly as they were. Inside nnU-Net's own
    CUDA autocast (fp16) this inner one decides the forward's precision; the loss then sees fp32.
    """
    forward = module.forward

    @functools.wraps(forward)
    def bf16_forward(*args, **kwargs):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return _to_float(forward(*args, **kwargs))

    module.forward = bf16_forward
    return module


def synchronize(device: torch.device) -> None:
    """Wait until the device has done the work queued on it (CUDA runs asynchronously), for timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class StepTiming:
    """How the speed measurements time a step on a device: untimed warm-up calls, timed calls, and the
    statistic of the timed ones that is reported."""

    warmup: int
    repeats: int
    statistic: str  # "median" or "best"

    def summary(self, seconds: list[float]) -> float:
        return statistics.median(seconds) if self.statistic == "median" else min(seconds)


def step_timing(device: torch.device, cpu_repeats: int = 3) -> StepTiming:
    """On CUDA 5 warm-ups (torch.compile, cuDNN's autotuning and the allocator settle in them) and the
    median of 20; on a CPU, which other processes share and can only slow down, the best of a few."""
    if device.type == "cuda":
        return StepTiming(warmup=5, repeats=20, statistic="median")
    return StepTiming(warmup=1, repeats=cpu_repeats, statistic="best")
