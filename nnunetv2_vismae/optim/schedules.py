"""Learning-rate schedules: fine-tuning's, stepped per epoch with nnU-Net's ``step(current_epoch)``
interface, and pretraining's warmup and cosine, stepped per optimizer step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, _LRScheduler


def warmup_cosine_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps, then half-cosine to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine_schedule(optimizer: Optimizer, warmup: int, total: int) -> LambdaLR:
    """Pretraining's schedule of the base lr (``warmup_cosine_factor``). A plain function as the lambda keeps
    the scheduler's state dict as states saved before hold it."""
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup, total))


class WarmupPolyLRScheduler(_LRScheduler):
    """Linear warm-up to ``initial_lr`` over ``warmup_steps``, then nnU-Net's poly decay to 0.

    One scheduler for the whole run, so nnU-Net's checkpointing restores it unchanged.
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int, exponent: float = 0.9):
        self.initial_lr, self.max_steps, self.exponent = initial_lr, max_steps, exponent
        self.warmup_steps = max(0, min(warmup_steps, max_steps - 1))
        self.ctr = 0
        super().__init__(optimizer, -1)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return self.initial_lr * max(0.0, 1 - progress) ** self.exponent

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step, self.ctr = self.ctr, self.ctr + 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.group_lr(current_step, group)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def group_lr(self, step: int, group: dict) -> float:
        return self.lr_at(step) * group.get("lr_scale", 1.0)


class SawtoothLRScheduler(WarmupPolyLRScheduler):
    """Decoder-only warm-up for ``decoder_steps`` (encoder groups at lr 0), then the whole network
    warms up again over ``warmup_steps`` and decays: the schedule nnU-Net's MAE study found best
    for pretrained CNNs. The encoder keeps its gradients throughout, so DDP needs no special case.
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, decoder_steps: int, warmup_steps: int):
        self.decoder_steps = max(0, min(decoder_steps, max_steps - 2))
        super().__init__(optimizer, initial_lr, max_steps - self.decoder_steps, warmup_steps)

    def group_lr(self, step: int, group: dict) -> float:
        if step < self.decoder_steps:
            return 0.0 if group.get("encoder") else self.initial_lr * (step + 1) / self.decoder_steps
        return super().group_lr(step - self.decoder_steps, group)
