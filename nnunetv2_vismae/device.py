"""Devices and reduced precision: the one place that picks a device and decides where bf16 runs.

On CUDA nnU-Net already runs its AMP (fp16 autocast and a GradScaler). On CPU nnU-Net runs fp32;
there we run the network's forward under bf16 autocast when the CPU has native bf16 (oneDNN
reports it: AVX512-BF16 or AMX), where it is several times faster. Without native bf16 it is
emulated and about ten times slower than fp32 (measured on an AMD EPYC without AVX512), so fp32
stays. ``nnUNet_vismae_cpu_bf16=1`` or ``=0`` overrides the detection.
"""

from __future__ import annotations

import functools
import os

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


def visible_gpus() -> list[str]:
    """The GPUs this process may give to the processes it starts, as CUDA_VISIBLE_DEVICES names them
    (indices or UUIDs): that variable's entries when it is set, else every device torch sees."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        return [gpu.strip() for gpu in value.split(",") if gpu.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def cpu_has_native_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_bf16(device: torch.device) -> bool:
    """bf16 runs natively: always on CUDA; on CPU only with AVX512-BF16/AMX (oneDNN's check)."""
    return device.type != "cpu" or cpu_has_native_bf16()


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


def run_forward_in_bf16(module: nn.Module) -> nn.Module:
    """Make ``module(x)`` compute under CPU bf16 autocast and return fp32 outputs for the loss.

    Patches the instance's ``forward`` so parameter names, ``state_dict`` and the attributes
    nnU-Net touches (``decoder.deep_supervision``) stay exactly as they were.
    """
    forward = module.forward

    @functools.wraps(forward)
    def bf16_forward(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _to_float(forward(*args, **kwargs))

    module.forward = bf16_forward
    return module
