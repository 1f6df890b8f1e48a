"""Timing and memory of ``nnUNetv2_vismae_speed``: wall and CPU seconds of functions called in turn
(after warm-ups; median on CUDA, best on CPU: ``nnunetv2_vismae.device.step_timing``), the peak memory
a call adds, the machine's matmul FLOP/s, the yardstick of every ratio, and the datasheet peak."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import torch

from nnunetv2_vismae.device import StepTiming, native_bf16, step_timing, synchronize


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
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

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
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._running = False
            self._thread.join()


def interleaved_seconds(fns: dict, device: torch.device, timing: StepTiming) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of each function, ``timing``'s statistic of ``timing.repeats`` calls made in
    turn, so that a change in the machine's load hits all of them alike. CPU seconds are this
    process's (all threads): other processes on a shared CPU disturb them less than the wall time."""
    times = {name: [] for name in fns}
    for _ in range(timing.repeats):
        for name, fn in fns.items():
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(timing.summary(list(column)) for column in zip(*pairs)) for name, pairs in times.items()}


def cpu_seconds(times: tuple[float, float], device: torch.device) -> float | None:
    """The CPU seconds of ``interleaved_seconds``; on CUDA they measure only the host, so none."""
    return times[1] if device.type == "cpu" else None


def warm_up(fns: dict, device: torch.device, timing: StepTiming) -> dict[str, float]:
    """Each function called ``timing.warmup`` times, untimed; returns the peak memory its first call added."""
    peaks = {}
    for name, fn in fns.items():
        with PeakMemory(device) as memory:
            fn()
        peaks[name] = memory.peak_mb
    for _ in range(timing.warmup - 1):
        for fn in fns.values():
            fn()
    return peaks


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int | None = None) -> float:
    """FLOP/s of n x n matmuls, the best of 5 timings; on CUDA each timing spans 10 matmuls (one takes
    about a millisecond there). Emulated bf16 on CPU gets a smaller n to stay quick."""
    if n is None:
        n = 8192 if device.type == "cuda" else (1024 if dtype == torch.float32 or native_bf16(device) else 256)
    a, b, c = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(3))
    calls = 10 if device.type == "cuda" else 1

    def matmuls():
        for _ in range(calls):
            torch.matmul(a, b, out=c)

    timing = StepTiming(warmup=step_timing(device).warmup, repeats=5, statistic="best")
    warm_up({"matmul": matmuls}, device, timing)
    return calls * 2 * n**3 / interleaved_seconds({"matmul": matmuls}, device, timing)["matmul"][0]


# dense bf16 tensor-core peaks from NVIDIA's datasheets (the sparse figures are twice these), by the
# first part of torch.cuda.get_device_name that matches
DATASHEET_BF16_FLOPS = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def datasheet_bf16_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak on its datasheet, None for CPUs and GPUs not in the table."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in DATASHEET_BF16_FLOPS if part in name), None)
