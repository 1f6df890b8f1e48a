"""The embedded classification task: which appearance style (CT, MR T1, MR T2, ultrasound) a
phantom slice is rendered in.

The phantoms (``generator.make_case``) always contain a liver lesion, so "lesion present" is not a
task they can pose; the style is, and it is hard in the right way for a pretrained encoder: after
per-image z-score normalization the styles differ in texture, contrast layout, noise and field of
view rather than in intensity range. Written as a CSV of ``image,label`` rows with the images in
``images/``, or as one subfolder per class; deterministic in the seed, and a case does not change
when the number of cases changes.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from nnunetv2_vismae.io.atomic import atomic_path, write_bytes_atomic
from nnunetv2_vismae.phantoms.generator import STYLES, make_case

SPLITS = {"train": 0, "test": 1}
TASK_STREAM = 7  # keeps these cases apart from the segmentation dataset's for the same seed
FORMATS = ("nii", "png")
LAYOUTS = ("csv", "folders")


def style_case(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, str]:
    """(image float32 size x size, style): styles cycle, so every class has the same count +- 1."""
    style = STYLES[index % len(STYLES)]
    image, _ = make_case(np.random.default_rng([int(seed), TASK_STREAM, SPLITS[split], int(index)]), size, style)
    return image, style


def _write_image(image: np.ndarray, path: Path, image_format: str) -> None:
    if image_format == "png":  # 8 bit: each image's own range, as a screenshot or export would have it
        low, high = float(image.min()), float(image.max())
        pixels = np.round((image - low) / max(high - low, 1e-8) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        write_bytes_atomic(path, buffer.getvalue())
    else:  # float NIfTI keeps Hounsfield units and MR signal
        with atomic_path(path) as tmp:  # ITK wants the name to end in .nii.gz, the temporary's ends in .gz
            sitk.WriteImage(sitk.GetImageFromArray(image), tmp + ".nii.gz", True)
            os.replace(tmp + ".nii.gz", tmp)


def write_style_task(
    out: str | Path,
    num_train: int = 160,
    num_test: int = 80,
    size: int = 64,
    seed: int = 0,
    image_format: str = "nii",
    layout: str = "csv",
) -> dict[str, Path]:
    """Write the task under ``out``; returns {"train": ..., "test": ...}, each a CSV or a folder
    that ``nnUNetv2_vismae_classify`` takes as ``-i``."""
    if image_format not in FORMATS or layout not in LAYOUTS:
        raise ValueError(
            f"format must be one of {FORMATS} and layout one of {LAYOUTS}, got {image_format!r} and {layout!r}"
        )
    out = Path(out)
    ending = ".nii.gz" if image_format == "nii" else ".png"
    written = {}
    for split, count in (("train", num_train), ("test", num_test)):
        rows = []
        for i in range(count):
            image, style = style_case(seed, split, i, size)
            name = f"{split}_{i:04d}{ending}"
            relative = Path(split) / style / name if layout == "folders" else Path("images") / name
            _write_image(image, out / relative, image_format)
            rows.append([relative.as_posix(), style])
        if layout == "folders":
            written[split] = out / split
        else:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows([["image", "label"], *rows])
            write_bytes_atomic(out / f"{split}.csv", buffer.getvalue().encode())
            written[split] = out / f"{split}.csv"
    return written
