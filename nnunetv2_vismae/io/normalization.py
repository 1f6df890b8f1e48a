"""Per-image intensity normalization for image files, following nnU-Net's schemes.

``zscore``: nnU-Net's ``ZScoreNormalization`` ((x - mean) / max(std, 1e-8) over the whole image or
volume). ``ct``: nnU-Net's ``CTNormalization`` (clip to a window, then z-score with fixed statistics);
nnU-Net takes window and statistics from the dataset fingerprint, here they are given on the command
line (``--ct-clip``, ``--ct-stats``; without stats, the clipped image's own mean/std is used).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RGB_TO_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Normalization:
    scheme: str = "zscore"  # "zscore" | "ct"
    ct_clip: tuple[float, float] | None = None
    ct_stats: tuple[float, float] | None = None  # (mean, std) of the clipped foreground

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32, copy=False)
        if self.scheme == "ct":
            image = np.clip(image, *self.ct_clip)
            mean, std = self.ct_stats if self.ct_stats is not None else (image.mean(), image.std())
        else:
            mean, std = image.mean(), image.std()
        return (image - mean) / max(float(std), 1e-8)

    def to_json(self) -> dict:
        d = asdict(self)
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        d["applied"] = "per image (2D file) or per volume, as nnU-Net normalizes one case"
        return d


def to_grayscale(channels_first: np.ndarray) -> np.ndarray:
    """C x ... image with C in {1, 3, 4} (gray, RGB, RGBA) -> 1 x ... luminance."""
    c = channels_first.shape[0]
    if c == 1:
        return channels_first
    if c in (3, 4):
        return np.tensordot(RGB_TO_GRAY, channels_first[:3].astype(np.float32), axes=(0, 0))[None]
    raise ValueError(f"cannot convert a {c}-channel image to grayscale")
