"""Pretraining throughput of one configuration: ``python -m pretrain.speed --json OUT [pretrain flags]``.

The model, optimizer and loader are built by ``Pretrainer.setup`` from the flags of
``nnUNetv2_vismae_pretrain`` (so exactly what a user's run would build), then:

- the model's images/s: the time of the training loop's own ``Pretrainer.train_step`` (mask on
  the device, forward under the run's precision, backward, the finite checks of loss and gradient
  norm, AdamW, the schedule) on one batch held on the device, so data loading is not part of it;
  after warm-up steps, the median on CUDA and the best on a CPU (``nnunetv2_vismae.device.step_timing``),
  in wall and in this process's CPU seconds;
- model FLOPs per step, counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
  convolutions, attention; forward and backward), and model FLOP/s = FLOPs / step time;
- the loader's samples/s with the configured ``--workers``, measured after its first batch
  (worker start-up excluded), while the model is idle;
- peak memory: ``max_memory_allocated`` on CUDA, the process's peak RSS on CPU (run one
  configuration per process for this to mean one configuration).

Writes one JSON object to ``--json`` (atomically).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from nnunetv2_vismae.device import StepTiming, step_timing, synchronize
from nnunetv2_vismae.errors import UserError
from nnunetv2_vismae.flags import positive_int
from nnunetv2_vismae.io.atomic import write_json_atomic
from pretrain.cli import build_parser, validate_args
from pretrain.config import PretrainConfig
from pretrain.train import Pretrainer


class StepRunner:
    """``Pretrainer.train_step`` over and over on one batch (no logging, no saving)."""

    def __init__(self, trainer: Pretrainer, batch: tuple[torch.Tensor, list[str]]):
        imgs, reports = batch
        self.trainer = trainer
        self.batches = itertools.repeat((imgs.to(trainer.runtime.device), reports))
        self.generator = torch.Generator(device=trainer.runtime.device)
        trainer.model.train()

    def __call__(self) -> None:
        self.trainer.train_step(self.batches, self.generator)

    def seconds(self, timing: StepTiming) -> tuple[float, float]:
        """(wall, CPU) seconds per step, ``timing``'s statistic of each; call after the first warm-up step (the
        FLOP count). CPU seconds are this process's, which other processes on a shared CPU disturb less."""
        device = self.trainer.runtime.device
        for _ in range(timing.warmup - 1):
            self()
        wall, cpu = [], []
        for _ in range(timing.repeats):
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            self()
            synchronize(device)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return timing.summary(wall), timing.summary(cpu)

    def flops(self) -> int:
        """FLOPs of one step, counted on torch's operators: eager even where the model is compiled (a
        compiled graph's kernels are not operators the counter sees)."""
        with FlopCounterMode(display=False) as counter:
            torch.compiler.disable(self.__call__)()
        return int(counter.get_total_flops())


def loader_samples_per_s(loader, batches: int) -> tuple[tuple[torch.Tensor, list[str]], float]:
    """(the first batch: images and reports, samples/s over the next ``batches`` batches)."""
    iterator = iter(loader)
    try:
        first = next(iterator)
        start = time.perf_counter()
        samples = sum(next(iterator)[0].shape[0] for _ in range(batches))
        return first, samples / (time.perf_counter() - start)
    finally:  # the workers ignore SIGTERM (the loop stops them itself), so stop them here too
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def timing_of(device: torch.device, warmup: int | None, repeats: int | None) -> StepTiming:
    """The device's step timing, with the warm-up and timed steps given on the command line."""
    default = step_timing(device)
    return StepTiming(warmup or default.warmup, repeats or default.repeats, default.statistic)


def measure(args: argparse.Namespace, timing_flags: tuple[int | None, int | None], loader_batches: int) -> dict:
    trainer = Pretrainer(PretrainConfig.from_args(args)).setup()
    trainer.release()  # measuring writes nothing more into -o
    device = trainer.runtime.device
    timing = timing_of(device, *timing_flags)
    first, loader_rate = loader_samples_per_s(trainer.loader, loader_batches)
    run = StepRunner(trainer, first)
    flops = run.flops()  # also the first warm-up step
    step_s, step_cpu_s = run.seconds(timing)
    images_per_s = trainer.effective_batch / step_s  # --accum micro-batches per step
    return {
        "device": str(device),
        "precision": trainer.precision,
        "batch_size": args.batch_size,
        "patch_size": trainer.patch_size,
        "family": args.family,
        "decoder": getattr(args, "decoder", None),
        "mask_ratio": getattr(args, "mask_ratio", None),
        "workers": args.workers,
        "compile": getattr(args, "compile", None),  # the pretraining command's flag, as parsed
        "timing": {"warmup": timing.warmup, "repeats": timing.repeats, "statistic": timing.statistic},
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "step_s": step_s,
        "step_cpu_s": step_cpu_s,
        "images_per_s": images_per_s,
        "flops_per_step": flops,
        "model_flops_per_s": flops / step_s,
        "loader_samples_per_s": loader_rate,
        "loader_vs_model": loader_rate / images_per_s,
        "peak_mb": peak_memory_mb(device),
    }


def parse(argv: list[str] | None, workdir: str) -> tuple[argparse.Namespace, argparse.Namespace]:
    own = argparse.ArgumentParser(prog="python -m pretrain.speed", add_help=False)
    own.add_argument("--json", required=True, help="where to write the measurements")
    own.add_argument(
        "--repeats", type=positive_int, help="timed steps (default: the median of 20 on CUDA, the best of 3 on CPU)"
    )
    own.add_argument(
        "--warmup", type=positive_int, help="untimed steps first, the FLOP count included (default: 5 CUDA, 1 CPU)"
    )
    own.add_argument("--loader-batches", type=int, default=8, help="batches timed from the loader (default 8)")
    mine, rest = own.parse_known_args(argv)
    if "-o" not in rest:  # the setup writes into an output folder: a throw-away one unless given
        rest += ["-o", workdir]
    args = build_parser().parse_args(rest)
    validate_args(args)
    return mine, args


def main(argv: list[str] | None = None) -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="pretrain_speed_") as workdir:
            mine, args = parse(argv, workdir)
            result = measure(args, (mine.warmup, mine.repeats), mine.loader_batches)
    except UserError as e:
        print(f"pretrain.speed: error: {e}", file=sys.stderr)
        return 2
    write_json_atomic(mine.json, result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
