"""Timing and memory of ``nnUNetv2_vismae_speed``: best-of-N wall and CPU seconds of functions called
in turn, the peak memory a call adds, and the machine's matmul FLOP/s, the yardstick of every ratio."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import torch

from nnunetv2_vismae.device import native_bf16


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
    return 2 * n**3 / interleaved_seconds({"matmul": lambda: a @ b}, device, repeats=5)["matmul"][0]
