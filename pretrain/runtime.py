"""Device and distributed setup: the one place that knows about devices, ranks and autocast.

Distributed runs are launched with ``torchrun``; this module reads its environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and initialises the
process group with nccl on CUDA and gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nnunetv2_vismae.device import native_bf16, resolve_device


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few scalars over all ranks (one collective)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def autocast(self, precision: str):
        """bf16 autocast on CPU or CUDA, or nothing for fp32."""
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def resolve_precision(self, precision: str) -> str:
        """``auto`` -> ``bf16`` where it runs natively, else ``fp32`` (emulated bf16 on an AVX2 CPU
        made a VIS-MAE step ~20x slower); explicit choices are kept."""
        if precision == "auto":
            return "bf16" if native_bf16(self.device) else "fp32"
        return precision

    def shutdown(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def setup_runtime(device: str) -> Runtime:
    """Pick the device and, under torchrun (WORLD_SIZE > 1), join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device == "cuda" else "gloo", init_method="env://", rank=rank, world_size=world_size
        )
    return Runtime(torch_device, rank, world_size, local_rank)
