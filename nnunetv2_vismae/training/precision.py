"""Where the network computes in reduced precision: the one place that decides it by device.

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


def cpu_has_native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


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
