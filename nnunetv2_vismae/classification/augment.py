"""Batch augmentation for medical images, on tensors: flips (only where the user allows them,
since left and right are not interchangeable in most anatomy), small rotations and scaling, and
intensity jitter (contrast, brightness, noise) on the normalized intensities."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FLIPS = {"none": (), "lr": (3,), "ud": (2,), "both": (2, 3)}  # tensor dims flipped


@dataclass(frozen=True)
class Augmentation:
    flip: str = "none"
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    contrast_range: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1  # added offset, in units of the normalized intensity
    noise_std: float = 0.05

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """B x C x H x W -> augmented copy (each image its own random draw)."""
        x = self.flip_randomly(x, generator)
        x = self.rotate_and_scale(x, generator)
        return self.jitter_intensity(x, generator)

    def flip_randomly(self, x, generator):
        for dim in FLIPS[self.flip]:
            chosen = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(chosen[:, None, None, None], x.flip(dim), x)
        return x

    def rotate_and_scale(self, x, generator):
        b = x.shape[0]
        angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(self.max_rotation_deg)
        low, high = self.scale_range
        scale = low + torch.rand(b, generator=generator) * (high - low)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output -> input coordinates
        theta = torch.stack(
            [torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1
        ).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def jitter_intensity(self, x, generator):
        b = x.shape[0]
        low, high = self.contrast_range
        contrast = (low + torch.rand(b, generator=generator) * (high - low)).to(x)
        offset = ((torch.rand(b, generator=generator) * 2 - 1) * self.brightness).to(x)
        noise = torch.randn(x.shape, generator=generator).to(x) * self.noise_std
        return x * contrast[:, None, None, None] + offset[:, None, None, None] + noise
