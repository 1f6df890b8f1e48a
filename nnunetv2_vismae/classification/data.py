"""Which images, with which labels: a CSV of ``image,label`` rows or one subfolder per class.

CSV paths are relative to the CSV's folder (absolute paths work too). Every row is checked up
front, so a bad row stops the run before any training with its line number in the message.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.io.images import SUPPORTED_ENDINGS, file_kind
from nnunetv2_vismae.label_subsets import label_subset


@dataclass(frozen=True)
class Sample:
    path: str  # absolute path of the image file
    label: str | None  # None when the input carries no labels (predict)
    where: str  # "labels.csv line 3" or the file itself, for error messages


def _checked_image(path: Path, where: str) -> str:
    if file_kind(str(path)) is None:
        raise ClassificationError(
            f"{where}: {path.name} is not a supported image file (expected one of {' '.join(SUPPORTED_ENDINGS)})."
        )
    if not path.is_file():
        raise ClassificationError(f"{where}: image file {path} does not exist.")
    return str(path.resolve())


def read_csv(csv_path: Path, require_labels: bool = True) -> list[Sample]:
    """Rows of a CSV with a header naming an ``image`` and (for training) a ``label`` column."""
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [(n, row) for n, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not rows:
        raise ClassificationError(f"{csv_path} is empty; expected a header 'image,label' and one row per image.")
    header = [cell.strip().lower() for cell in rows[0][1]]
    if "image" not in header or (require_labels and "label" not in header):
        raise ClassificationError(
            f"{csv_path} line {rows[0][0]}: header {','.join(header)!r} lacks "
            f"{'the columns image and label' if require_labels else 'an image column'}."
        )
    if len(rows) == 1:
        raise ClassificationError(f"{csv_path} has a header but no image rows.")
    image_col, label_col = header.index("image"), header.index("label") if "label" in header else None
    samples = []
    for line, row in rows[1:]:
        where = f"{csv_path} line {line}"
        cells = [cell.strip() for cell in row] + [""] * len(header)
        if not cells[image_col]:
            raise ClassificationError(f"{where}: the image column is empty.")
        label = cells[label_col] if label_col is not None else None
        if require_labels and not label:
            raise ClassificationError(f"{where}: the label column is empty.")
        samples.append(Sample(_checked_image(csv_path.parent / cells[image_col], where), label or None, where))
    return samples


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and file_kind(p.name) is not None)


def read_folder(folder: Path, require_labels: bool = True) -> list[Sample]:
    """One subfolder per class (its name is the label), or, without labels, images directly inside."""
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs and not require_labels:
        return [Sample(str(p.resolve()), None, str(p)) for p in _image_files(folder)] or _no_images(folder)
    if not class_dirs:
        raise ClassificationError(f"{folder} has no class subfolders; expected one subfolder of images per class.")
    samples = []
    for class_dir in class_dirs:
        files = _image_files(class_dir)
        if not files:
            raise ClassificationError(
                f"Class folder {class_dir} contains no supported image files ({' '.join(SUPPORTED_ENDINGS)})."
            )
        samples += [Sample(str(p.resolve()), class_dir.name, str(p)) for p in files]
    return samples


def _no_images(folder: Path):
    raise ClassificationError(f"{folder} contains no supported image files ({' '.join(SUPPORTED_ENDINGS)}).")


def load_samples(source: str, require_labels: bool = True) -> list[Sample]:
    """Samples of a CSV file or a folder, sorted by path so that every later step is deterministic."""
    path = Path(source)
    if path.is_dir():
        samples = read_folder(path, require_labels)
    elif path.is_file():
        samples = read_csv(path, require_labels)
    else:
        raise ClassificationError(f"Input {source} does not exist; expected a CSV file or a folder.")
    return sorted(samples, key=lambda s: (s.path, s.label or ""))


def class_names(samples: list[Sample]) -> list[str]:
    return sorted({s.label for s in samples})


def check_known_labels(samples: list[Sample], classes: list[str]) -> None:
    for s in samples:
        if s.label is not None and s.label not in classes:
            raise ClassificationError(f"{s.where}: label {s.label!r} is not one of the classes {', '.join(classes)}.")


def _class_rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(label.encode())])


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, val): ``val_fraction`` of every class (at least one image when the class has two or
    more) in validation, chosen by a seeded permutation per class."""
    if not 0 < val_fraction < 1:
        raise ClassificationError(f"--val-fraction must be between 0 and 1, got {val_fraction}.")
    train, val = [], []
    for label in class_names(samples):
        members = [s for s in samples if s.label == label]
        order = _class_rng(seed, label).permutation(len(members))
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    return sorted(train, key=lambda s: s.path), sorted(val, key=lambda s: s.path)


def stratified_label_subset(samples: list[Sample], percent: int, seed: int) -> list[Sample]:
    """``percent``% of every class (at least one image), nested: a smaller subset lies inside every
    larger one for the same seed (the segmentation benchmark's ``label_subset``, per class)."""
    chosen = set()
    for label in class_names(samples):
        paths = [s.path for s in samples if s.label == label]
        try:
            chosen.update(label_subset(paths, percent, f"classification/{label}", seed))
        except ValueError as e:
            raise ClassificationError(f"--labels: {e}") from None
    return [s for s in samples if s.path in chosen]
