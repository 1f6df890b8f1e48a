"""Images as network inputs: read, grayscale, normalized as in pretraining, one 2D slice, resized.

The normalization is the one recorded in the encoder checkpoint's metadata, so a pretrained
encoder sees inputs like those it was pretrained on (VIS-MAE's code pretrained with mean/std and
fine-tuned with min-max; this does not). It is applied per image (per volume for volumes, as
nnU-Net and the pretraining stage do), before the slice is taken.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nnunetv2_vismae.classification.data import Sample
from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.io.images import read_image
from nnunetv2_vismae.io.normalization import Normalization, to_grayscale

ZSCORE = {"scheme": "zscore"}


@dataclass(frozen=True)
class InputSpec:
    """Everything that turns an image file into the network input; saved with the model."""

    size: int
    in_channels: int
    normalization: dict  # see ``normalization_from_checkpoint``
    slice_axis: int = 0  # volumes: axis (numpy Z, Y, X order) the 2D slice is cut across
    slice_index: int | None = None  # None: the middle slice

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> InputSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ------------------------------------------------------------------------------ normalization
def _from_nnunet(norm: dict) -> dict:
    """nnU-Net's scheme of channel 0 with the dataset fingerprint it was preprocessed with."""
    scheme = (norm.get("normalization_schemes") or ["ZScoreNormalization"])[0]
    if scheme == "ZScoreNormalization":
        return ZSCORE
    if scheme == "CTNormalization":
        props = (norm.get("foreground_intensity_properties_per_channel") or {}).get("0", {})
        return {
            "scheme": "ct",
            "ct_clip": [props["percentile_00_5"], props["percentile_99_5"]],
            "ct_stats": [props["mean"], props["std"]],
        }
    raise ClassificationError(
        f"The checkpoint was pretrained on nnU-Net data normalized with {scheme}, "
        "which classification inputs cannot reproduce (ZScore or CT expected)."
    )


def normalization_from_checkpoint(norm: dict) -> dict:
    """A checkpoint's ``normalization`` metadata -> the scheme applied to inputs here:
    ``zscore``, ``ct`` (clip window and statistics) or ``unit_range`` (min-max to [0, 1], then
    (x - mean[c]) / std[c], what converted ImageNet/VIS-MAE weights expect)."""
    scheme = norm.get("scheme")
    if scheme == "zscore":
        return ZSCORE
    if scheme == "ct" and norm.get("ct_clip") is not None:
        return {"scheme": "ct", "ct_clip": list(norm["ct_clip"]), "ct_stats": norm.get("ct_stats")}
    if scheme == "nnunet":
        return _from_nnunet(norm)
    if scheme in ("imagenet_rgb", "imagenet_rgb_folded"):
        folded = scheme == "imagenet_rgb_folded"
        mean = [norm["folded_mean"]] if folded else list(norm["mean"])
        std = [norm["folded_std"]] if folded else list(norm["std"])
        return {"scheme": "unit_range", "mean": mean, "std": std}
    if scheme in ("ct", "mixed") and norm.get("per_source"):
        found = [normalization_from_checkpoint(s) for s in norm["per_source"]]
        if all(f == found[0] for f in found):
            return found[0]
        raise ClassificationError(
            f"The checkpoint was pretrained on sources with different normalizations "
            f"({found}); classification needs one."
        )
    raise ClassificationError(
        f"The checkpoint's normalization {norm!r} is not one classification can apply "
        "(zscore, ct, nnunet or imagenet expected)."
    )


def normalize(gray: np.ndarray, norm: dict, channels: int) -> np.ndarray:
    """1 x Z x Y x X image -> channels x Z x Y x X, normalized as ``norm`` says."""
    if norm["scheme"] == "unit_range":
        low, high = float(gray.min()), float(gray.max())
        unit = (gray - low) / max(high - low, 1e-8)
        mean = np.resize(np.asarray(norm["mean"], np.float32), channels)
        std = np.resize(np.asarray(norm["std"], np.float32), channels)
        return ((unit - mean[:, None, None, None]) / std[:, None, None, None]).astype(np.float32)
    clip, stats = norm.get("ct_clip"), norm.get("ct_stats")
    normalized = Normalization(norm["scheme"], tuple(clip) if clip else None, tuple(stats) if stats else None)(gray)
    return np.repeat(normalized, channels, axis=0)


# ------------------------------------------------------------------------------ geometry
def take_slice(image: np.ndarray, axis: int, index: int | None, path: str) -> np.ndarray:
    """C x Z x Y x X -> C x H x W: the image itself for 2D files, one slice of a volume."""
    if image.shape[1] == 1:
        return image[:, 0]
    length = image.shape[1 + axis]
    index = length // 2 if index is None else index
    if not 0 <= index < length:
        raise ClassificationError(
            f"{path}: slice {index} along axis {axis} does not exist (the volume has {length} slices there)."
        )
    return np.take(image, index, axis=1 + axis)


def resize_square(plane: torch.Tensor, size: int) -> torch.Tensor:
    """C x H x W -> C x size x size: padded to a square with each channel's minimum (so the aspect
    ratio is kept and the padding looks like background), then resized with antialiasing."""
    c, h, w = plane.shape
    side = max(h, w)
    canvas = plane.amin(dim=(1, 2), keepdim=True).expand(c, side, side).clone()
    top, left = (side - h) // 2, (side - w) // 2
    canvas[:, top : top + h, left : left + w] = plane
    return F.interpolate(canvas[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def load_input(path: str, spec: InputSpec) -> torch.Tensor:
    """One image file -> float32 tensor in_channels x size x size."""
    try:
        gray = to_grayscale(read_image(path))
    except (OSError, ValueError, RuntimeError) as e:  # PIL, tifffile, SimpleITK; the user needs the file
        raise ClassificationError(f"Cannot read image {path} ({type(e).__name__}: {e}).") from None
    nonfinite = int(np.count_nonzero(~np.isfinite(gray)))
    if nonfinite:
        raise ClassificationError(f"Image {path} has {nonfinite} NaN or Inf pixels; fix or remove it.")
    image = normalize(gray, spec.normalization, spec.in_channels)
    plane = take_slice(image, spec.slice_axis, spec.slice_index, path)
    return resize_square(torch.from_numpy(np.ascontiguousarray(plane)), spec.size)


def load_inputs(samples: list[Sample], spec: InputSpec, what: str = "images") -> torch.Tensor:
    """All images as one N x C x size x size tensor (read once, kept in memory)."""
    out = torch.empty((len(samples), spec.in_channels, spec.size, spec.size), dtype=torch.float32)
    for i, sample in enumerate(tqdm(samples, desc=f"Reading {what}", unit="img", leave=False)):
        out[i] = load_input(sample.path, spec)
    return out
