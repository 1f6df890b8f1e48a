"""Logits of a classifier over a tensor of inputs: one function for validation and for predict,
so that predicting on the validation images reproduces the validation metrics."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from nnunetv2_vismae.device import cpu_bf16_enabled


def precision_context(device: torch.device):
    """bf16 autocast on CUDA and on CPUs with native bf16 (device.py decides), fp32 otherwise."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16_enabled(device):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int = 32) -> torch.Tensor:
    """N x C x H x W (CPU) -> N x num_classes float32 logits (CPU), the model in eval mode."""
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(inputs), batch_size):
        with precision_context(device):
            outputs.append(model(inputs[start : start + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty((0, model.head.out_features))
