"""Device and distributed setup: the one place that knows about devices, ranks and autocast.

Distributed runs are launched with ``torchrun``; this module reads its environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and initialises the
process group with nccl on CUDA and gloo on CPU. Besides it, every rank joins a gloo group with a
long timeout for exchanging Python objects: there ranks may wait for each other for as long as the
slowest takes to screen its share of a large corpus, far beyond nccl's default 10 minutes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from nnunetv2_vismae.device import configure_cuda_speed, native_bf16, resolve_device
from nnunetv2_vismae.errors import UserError
from pretrain.errors import PretrainUserError

SLOW_WAIT = timedelta(hours=12)  # one rank screening millions of headers on a slow file system


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    object_group: dist.ProcessGroup | None = None  # the gloo group of ``gather``; None: the default group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: torch.Tensor) -> list[float]:
        """Sum a 1-D tensor of scalars over all ranks in one collective, and bring it to the host: the one
        host synchronization a training step needs."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values.tolist()

    def gather(self, value) -> list:
        """``value`` (any picklable object) of every rank, in rank order; ranks may arrive hours apart."""
        if not self.distributed:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.object_group)
        return values

    def stop_together(self, error: UserError | None) -> None:
        """Raise on every rank if any rank met a user error (each rank passes its own or None), so no rank
        is left waiting for the others in a collective; the rank that met it raises its own."""
        errors = self.gather(None if error is None else str(error))
        if error is not None:
            raise error
        for rank, message in enumerate(errors):
            if message is not None:
                raise PretrainUserError(f"Rank {rank} stopped: {message}")

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
    """Pick the device (with CUDA's fast math switched on) and, under torchrun (WORLD_SIZE > 1), join the
    process group and the slow-waiting object group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    configure_cuda_speed(torch_device)
    object_group = None
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if device == "cuda" else "gloo", init_method="env://", rank=rank, world_size=world_size
            )
        object_group = dist.new_group(backend="gloo", timeout=SLOW_WAIT)
    return Runtime(torch_device, rank, world_size, local_rank, object_group)
