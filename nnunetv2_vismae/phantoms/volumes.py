"""Synthetic abdominal volumes: the 3D demo's dataset, the 2D phantoms' anatomy drawn as solids.

Every case is a stack of axial slices through a randomly drawn upper abdomen: a body ellipsoid with
subcutaneous fat and a muscle wall, a spine of vertebrae and discs along the body axis, bowel loops and a
stomach (unlabeled distractors, some holding gas or fluid), a gallbladder, an aorta and an inferior vena
cava (unlabeled), and the three labeled organs of the 2D phantoms (``generator.LABELS``): a liver with
one or two lesions, zero to two kidneys with cortex and medulla, a spleen. Organs are rough ellipsoids
whose outline varies around and along the body axis.

The voxels are anisotropic as in clinical abdominal scans, ``SPACING_MM`` (3 mm slices, 1 mm in-plane),
so nnU-Net plans its 3d_fullres network with in-plane-only poolings first. The anatomy is in normalised
coordinates, so a volume of any shape holds the whole of it.

Styles are those of the 2D phantoms that a volume scanner makes: ``ct`` (Hounsfield units, arterial or
portal-venous phase, gaussian noise, an additive bias field) and ``mr_t1`` / ``mr_t2`` (arbitrary units,
a multiplicative coil bias field, Rician noise, T2's largely inverted contrast). Ultrasound is left out:
its sector and beams are those of a 2D probe.

The dataset folder holds what the 2D generator's does (``imagesTr``/``labelsTr``, ``imagesTs``/``labelsTs``,
``imagesUnlabeled``, ``dataset.json``, ``phantoms.json``), as 3D NIfTI files; every case has its own random
stream derived from ``(seed, split, index)``, so a case does not change with the number of cases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunetv2_vismae.phantoms.generator import (
    AIR,
    BONE,
    BOWEL,
    CSF,
    FAT,
    FLUID,
    GAS,
    KCORTEX,
    KMEDULLA,
    LABELS,
    LESION,
    LIVER,
    MARROW,
    MESENTERY,
    MUSCLE,
    N_TISSUES,
    SPLEEN,
    SPLITS,
    VESSEL,
    _jitter,
    _style_for,
    check_counts,
    write_cases,
    write_dataset_json,
)

VOLUME_STYLES: Tuple[str, ...] = ("ct", "mr_t1", "mr_t2")
SPACING_MM: Tuple[float, float, float] = (3.0, 1.0, 1.0)  # (z, y, x): slice distance, then in-plane
MIN_SHAPE = (8, 16, 16)
VOLUMES_VERSION = 1
Grid = Tuple[np.ndarray, np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def _grid(rng: np.random.Generator, shape: Sequence[int]) -> Grid:
    """Normalised anatomical coordinates (z, y, x), each of ``shape``, after a random rotation about the body
    axis, an in-plane zoom and a shift. z grows caudally, y posteriorly, x to the image right."""
    axes = [(np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1 for n in shape]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    angle = rng.uniform(-0.25, 0.25)
    zoom = rng.uniform(0.85, 1.15)
    tz, ty, tx = rng.uniform(-0.07, 0.07, 3)
    ca, sa = np.cos(angle), np.sin(angle)
    y = (ca * yy - sa * xx) * zoom + ty
    x = (sa * yy + ca * xx) * zoom + tx
    return (zz + tz).astype(np.float32), y.astype(np.float32), x.astype(np.float32)


def _solid(
    rng: np.random.Generator,
    grid: Grid,
    center: Tuple[float, float, float],
    radii: Tuple[float, float, float],
    angle: float = 0.0,
    roughness: float = 0.15,
) -> np.ndarray:
    """Normalised radius field of a rough ellipsoid: < 1 inside, 1 on the surface.

    Semi-axes ``radii`` (z, y, x), the in-plane ones rotated by ``angle``; the surface is modulated by random
    harmonics 2..4 of the angle about the body axis and one slow wave along it, of relative amplitude up to
    ``roughness``."""
    z, y, x = grid
    ca, sa = np.cos(angle), np.sin(angle)
    dz, dy, dx = z - center[0], y - center[1], x - center[2]
    a = (ca * dx + sa * dy) / radii[2]
    b = (-sa * dx + ca * dy) / radii[1]
    c = dz / radii[0]
    rho = np.sqrt(a * a + b * b + c * c)
    theta = np.arctan2(b, a)
    outline = np.ones_like(rho)
    amplitudes = rng.uniform(0, roughness, 3) / np.sqrt([1, 2, 3])
    for k, amplitude, phase in zip((2, 3, 4), amplitudes, rng.uniform(0, 6.3, 3)):
        outline += np.float32(amplitude) * np.cos(k * theta + phase)
    outline += np.float32(rng.uniform(0, roughness)) * np.cos(np.pi * c * rng.uniform(0.5, 1.5) + rng.uniform(0, 6.3))
    return (rho / np.maximum(outline, 0.3)).astype(np.float32)


def _cylinder(rng, grid: Grid, cy: float, cx: float, ry: float, rx: float, roughness: float = 0.05) -> np.ndarray:
    """A rough elliptic cylinder along the body axis, through the whole volume."""
    return _solid(rng, grid, (0.0, cy, cx), (1e3, ry, rx), 0.0, roughness)


def _anatomy(rng: np.random.Generator, shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Draw one abdomen. Returns the tissue map (uint8, the 2D generator's tissue indices), the label map
    (uint8, LABELS) and per-case lesion settings."""
    grid = _grid(rng, shape)
    z, y, x = grid
    tissue = np.zeros(tuple(shape), np.uint8)
    label = np.zeros(tuple(shape), np.uint8)

    by, bx = rng.uniform(0.55, 0.72), rng.uniform(0.78, 0.93)
    body = _solid(rng, grid, (0.0, 0.05, 0.0), (rng.uniform(1.6, 2.2), by, bx), 0.0, 0.06)
    fat_t, muscle_t = rng.uniform(0.05, 0.16), rng.uniform(0.04, 0.08)
    tissue[body < 1] = FAT
    tissue[body < 1 - fat_t] = MUSCLE
    cavity = body < 1 - fat_t - muscle_t
    tissue[cavity] = MESENTERY

    # spine: vertebral bodies with discs between them, the canal behind, paraspinal muscles beside
    sy, sx, sr = 0.05 + by * rng.uniform(0.45, 0.6), rng.uniform(-0.05, 0.05), rng.uniform(0.08, 0.12)
    for side in (-1, 1):
        para = _cylinder(rng, grid, sy + sr * 1.2, sx + side * sr * 1.9, sr * 1.1, sr * 1.4, 0.1)
        tissue[(para < 1) & (body < 1 - fat_t)] = MUSCLE
    vertebra = _cylinder(rng, grid, sy, sx, sr, sr * 1.1)
    disc = np.cos(np.pi * (z * rng.uniform(2.5, 3.5) + rng.uniform(0, 2))) > 0.8
    tissue[(vertebra < 1) & ~disc] = BONE
    tissue[(vertebra < 0.75) & ~disc] = MARROW
    tissue[(vertebra < 1) & disc] = MUSCLE
    arch = _cylinder(rng, grid, sy + sr * 1.5, sx, sr * 0.55, sr * 0.75, 0.1)
    tissue[(arch < 1) & (vertebra >= 1)] = BONE
    tissue[_cylinder(rng, grid, sy + sr * 1.45, sx, sr * 0.32, sr * 0.32, 0.0) < 1] = CSF
    inside = cavity & (tissue == MESENTERY)

    # bowel loops (caudal) and stomach (cranial, image right): distractors, some with gas or fluid
    for _ in range(rng.integers(3, 8)):
        center = (rng.uniform(-0.2, 0.8), rng.uniform(-0.45, 0.25) * by / 0.65, rng.uniform(-0.45, 0.55) * bx)
        r = rng.uniform(0.05, 0.11)
        radii = (r * 3, r, r * rng.uniform(0.7, 1.4))
        loop = (_solid(rng, grid, center, radii, rng.uniform(0, np.pi), 0.2) < 1) & inside
        tissue[loop] = BOWEL
        content = rng.uniform()
        if content < 0.5:
            core = _solid(rng, grid, center, (r * 1.6, r * 0.55, r * 0.55), 0.0, 0.1) < 1
            tissue[core & loop] = GAS if content < 0.25 else FLUID
    if rng.uniform() < 0.8:
        center = (rng.uniform(-0.7, -0.3), rng.uniform(-0.45, -0.2) * by / 0.65, rng.uniform(0.2, 0.45) * bx)
        radii = (rng.uniform(0.35, 0.55), rng.uniform(0.12, 0.2), rng.uniform(0.12, 0.22))
        stomach = (_solid(rng, grid, center, radii, rng.uniform(0, np.pi), 0.2) < 1) & cavity
        tissue[stomach] = BOWEL
        tissue[stomach & (y < center[1] - rng.uniform(0.0, 0.08))] = GAS

    # liver: cranial, on the image left, with a left lobe towards the midline
    lz, ly, lx = rng.uniform(-0.5, -0.1), rng.uniform(-0.2, 0.05), -bx * rng.uniform(0.35, 0.55)
    liver_radii = (rng.uniform(0.6, 0.9), rng.uniform(0.25, 0.42), rng.uniform(0.22, 0.36))
    liver = _solid(rng, grid, (lz, ly, lx), liver_radii, rng.uniform(-0.5, 0.5), 0.25) < 1
    if rng.uniform() < 0.75:
        lobe = (lz - rng.uniform(0.0, 0.2), ly - rng.uniform(0.1, 0.2), lx + rng.uniform(0.25, 0.5))
        lobe_radii = (rng.uniform(0.3, 0.5), rng.uniform(0.08, 0.16), rng.uniform(0.15, 0.3))
        liver |= _solid(rng, grid, lobe, lobe_radii, rng.uniform(-0.4, 0.4), 0.25) < 1
    liver &= cavity
    tissue[liver] = LIVER
    label[liver] = LABELS["liver"]

    # gallbladder: a fluid pocket at the liver's anterior, caudal edge (unlabeled)
    if rng.uniform() < 0.5 and liver.any():
        where = np.nonzero(liver)
        i = np.argmin(y[where] - 0.5 * z[where] + 0.3 * rng.standard_normal(where[0].size))
        r = rng.uniform(0.05, 0.09)
        center = (z[where][i], y[where][i] + r * 0.5, x[where][i])
        gallbladder = (_solid(rng, grid, center, (r * 2.5, r * 1.4, r), rng.uniform(0, np.pi), 0.1) < 1) & cavity
        tissue[gallbladder] = FLUID
        label[gallbladder] = 0

    # spleen: cranial, posterior on the image right, liver-like brightness
    spleen_center = (rng.uniform(-0.6, -0.2), rng.uniform(0.0, 0.3) * by / 0.65, bx * rng.uniform(0.45, 0.65))
    spleen_radii = (rng.uniform(0.4, 0.6), rng.uniform(0.26, 0.36), rng.uniform(0.15, 0.21))
    spleen = (_solid(rng, grid, spleen_center, spleen_radii, rng.uniform(-0.9, -0.2), 0.25) < 1) & cavity
    tissue[spleen] = SPLEEN
    label[spleen] = LABELS["spleen"]

    # kidneys: caudal to liver and spleen, beside the spine, each present with probability 0.85
    for side in (-1, 1):
        if rng.uniform() < 0.85:
            kr = rng.uniform(0.12, 0.17)
            center = (rng.uniform(0.0, 0.4), sy - rng.uniform(0.0, 0.1), sx + side * rng.uniform(0.25, 0.4))
            radii = (rng.uniform(0.35, 0.5), kr * rng.uniform(1.1, 1.6), kr)
            kidney = _solid(rng, grid, center, radii, side * rng.uniform(0.1, 0.6), 0.12)
            mask = (kidney < 1) & cavity & (tissue != BONE)
            tissue[mask] = KCORTEX
            tissue[mask & (kidney < rng.uniform(0.45, 0.7))] = KMEDULLA
            label[mask] = LABELS["kidney"]

    # aorta (left-anterior of the spine) and IVC (right-anterior, flattened): along the whole body axis
    ar = rng.uniform(0.05, 0.08)
    ay, ax_ = sy - sr - ar - rng.uniform(0.01, 0.05), sx + rng.uniform(0.02, 0.1)
    aorta = _cylinder(rng, grid, ay, ax_, ar, ar, 0.03) < 1
    ir = rng.uniform(0.05, 0.075)
    iy, ix = ay - rng.uniform(0.0, 0.06), ax_ - rng.uniform(0.12, 0.2)
    ivc = _cylinder(rng, grid, iy, ix, ir * rng.uniform(0.6, 1.0), ir * rng.uniform(1.0, 1.5), 0.08) < 1
    vessels = (aorta | ivc) & cavity
    tissue[vessels] = VESSEL
    label[vessels] = 0

    # lesions: one or two blobs inside the liver, part of its label
    liver_now = label == LABELS["liver"]
    where = np.nonzero(liver_now)
    for _ in range(rng.integers(1, 3) if where[0].size else 0):
        i = rng.integers(where[0].size)
        r = rng.uniform(0.06, 0.12)
        center = (z[where][i], y[where][i], x[where][i])
        radii = (r * rng.uniform(1.5, 3.0), r, r * rng.uniform(0.7, 1.3))
        tissue[(_solid(rng, grid, center, radii, rng.uniform(0, np.pi), 0.2) < 1) & liver_now] = LESION

    lesion_settings = {"hyper": float(rng.uniform() < 0.3), "strength": float(rng.uniform(0.0, 1.0))}
    return tissue, label, lesion_settings


# ----------------------------------------------------------------------------------------------
# appearance
# ----------------------------------------------------------------------------------------------
def _in_voxels(sigma: float) -> Tuple[float, float, float]:
    """An in-plane length in voxels as per-axis gaussian sigmas: the same length in millimetres on every axis."""
    return tuple(sigma * SPACING_MM[2] / s for s in SPACING_MM)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Gaussian random field with correlation length sigma (in-plane voxels), zero mean, unit std."""
    field = gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), _in_voxels(sigma), mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _low_frequency_field(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Smooth bias-like field, zero mean, unit std: a random 2nd order polynomial plus a very smooth random field."""
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    p = rng.normal(0, 1, 6)
    field = p[0] * yy + p[1] * xx + p[2] * zz + p[3] * yy * xx + p[4] * yy**2 + p[5] * xx**2
    field = field + 0.5 * _smooth_noise(rng, shape, shape[-1] / 5)
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _tissue_image(rng: np.random.Generator, tissue: np.ndarray, mean: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Piecewise-constant tissue means plus per-tissue textures (a fine and a coarse random field)."""
    fine = _smooth_noise(rng, tissue.shape, rng.uniform(0.6, 1.2))
    coarse = _smooth_noise(rng, tissue.shape, rng.uniform(2, 5))
    mix = rng.uniform(0.3, 0.7)
    return (mean[tissue] + texture[tissue] * (mix * fine + (1 - mix) * coarse)).astype(np.float32)


# (mean, spread) per tissue; each case draws its values uniformly in mean +- spread
CT_TISSUES = {AIR: (-1000, 0), FAT: (-100, 20), MUSCLE: (50, 10), MESENTERY: (-60, 30), BONE: (700, 250)}
CT_TISSUES.update({MARROW: (250, 80), CSF: (10, 5), BOWEL: (40, 20), GAS: (-900, 60), FLUID: (8, 6)})
CT_PHASES = {
    "arterial": {LIVER: (75, 10), SPLEEN: (95, 20), KCORTEX: (190, 40), KMEDULLA: (90, 20), VESSEL: (280, 60)},
    "portal": {LIVER: (110, 15), SPLEEN: (115, 15), KCORTEX: (170, 30), KMEDULLA: (160, 30), VESSEL: (160, 30)},
}
MR_TISSUES = {  # T1 and T2 signal per tissue: fat bright in both, fluid and lesions bright in T2 only
    "t1": {AIR: (0, 0), FAT: (900, 80), MUSCLE: (300, 50), MESENTERY: (700, 120), BONE: (60, 30), MARROW: (600, 100)},
    "t2": {AIR: (0, 0), FAT: (600, 100), MUSCLE: (200, 40), MESENTERY: (500, 120), BONE: (60, 30), MARROW: (400, 80)},
}
MR_TISSUES["t1"].update({CSF: (120, 40), LIVER: (520, 50), SPLEEN: (340, 40), KCORTEX: (400, 60), KMEDULLA: (300, 60)})
MR_TISSUES["t1"].update({VESSEL: (60, 40), BOWEL: (350, 80), GAS: (20, 10), FLUID: (120, 50)})
MR_TISSUES["t2"].update({CSF: (950, 50), LIVER: (250, 50), SPLEEN: (520, 70), KCORTEX: (600, 80), KMEDULLA: (700, 80)})
MR_TISSUES["t2"].update({VESSEL: (50, 30), BOWEL: (420, 100), GAS: (20, 10), FLUID: (950, 50)})


def _render_ct(rng: np.random.Generator, tissue: np.ndarray, lesion: Dict[str, float]) -> np.ndarray:
    mean = _jitter(rng, {**CT_TISSUES, **CT_PHASES[rng.choice(sorted(CT_PHASES))]})
    delta = 30 + 40 * lesion["strength"]
    mean[LESION] = mean[LIVER] + (delta if lesion["hyper"] else -delta)
    texture = np.full(N_TISSUES, 8, np.float32)
    texture[[BONE, MARROW]] = 120
    texture[[LIVER, SPLEEN, LESION]] = rng.uniform(3, 8)
    texture[AIR] = 0
    image = gaussian_filter(_tissue_image(rng, tissue, mean, texture), _in_voxels(rng.uniform(0.5, 1.2)))
    image += (tissue != AIR) * rng.uniform(5, 25) * _low_frequency_field(rng, tissue.shape)
    noise = gaussian_filter(rng.standard_normal(tissue.shape).astype(np.float32), _in_voxels(0.6))
    return image + rng.uniform(5, 15) * noise / (noise.std() + 1e-8)


def _render_mr(rng: np.random.Generator, tissue: np.ndarray, lesion: Dict[str, float], weighting: str) -> np.ndarray:
    mean = _jitter(rng, MR_TISSUES[weighting])
    if weighting == "t1":
        if rng.uniform() < 0.5:  # contrast-enhanced vessels, else flow voids
            mean[VESSEL] = rng.uniform(630, 870)
        factor = 1 - (0.3 + 0.3 * lesion["strength"]) * (-0.6 if lesion["hyper"] else 1)
    else:
        factor = 1 + (0.5 + 1.0 * lesion["strength"]) * (1 if lesion["hyper"] or rng.uniform() < 0.7 else -0.5)
    mean[LESION] = mean[LIVER] * factor
    texture = np.full(N_TISSUES, 25, np.float32)
    texture[[LIVER, SPLEEN, LESION]] = rng.uniform(10, 40)
    texture[AIR] = 0
    image = np.maximum(_tissue_image(rng, tissue, mean, texture), 0)
    image = gaussian_filter(image, _in_voxels(rng.uniform(0.5, 1.3)))
    image *= np.exp(rng.uniform(0.15, 0.5) * _low_frequency_field(rng, tissue.shape))
    sigma = rng.uniform(0.01, 0.03) * float(mean.max())
    real = image + sigma * rng.standard_normal(image.shape).astype(np.float32)
    imaginary = sigma * rng.standard_normal(image.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary) * rng.uniform(0.5, 2.0)


def make_volume(
    rng: np.random.Generator, shape: Sequence[int] = (24, 48, 48), style: str = "ct"
) -> Tuple[np.ndarray, np.ndarray]:
    """One phantom volume: (image float32 of ``shape`` (z, y, x), label uint8 of ``shape``) in the given style,
    in the style's own units (HU for ``ct``, arbitrary units for MR); labels follow LABELS."""
    if style not in VOLUME_STYLES:
        raise ValueError(f"unknown volume style {style!r}; expected one of {', '.join(VOLUME_STYLES)}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or any(n < m for n, m in zip(shape, MIN_SHAPE)):
        raise ValueError(f"volume shape {shape} must be (z, y, x) of at least {MIN_SHAPE} voxels")
    tissue, label, lesion = _anatomy(rng, shape)
    image = _render_ct(rng, tissue, lesion) if style == "ct" else _render_mr(rng, tissue, lesion, style[3:])
    return image.astype(np.float32), label


# ----------------------------------------------------------------------------------------------
# dataset on disk
# ----------------------------------------------------------------------------------------------
def _volume_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS[split], int(index), 3])  # 3: apart from the 2D cases' streams


def _write(array: np.ndarray, path: Path) -> None:
    itk = sitk.GetImageFromArray(array)
    itk.SetSpacing(tuple(reversed(SPACING_MM)))  # SimpleITK orders axes x, y, z
    sitk.WriteImage(itk, str(path), True)


def generate_volumes(
    raw_root: Union[str, Path],
    dataset_id: int = 810,
    name: str = "VisMAEPhantoms3D",
    num_train: int = 20,
    num_test: int = 10,
    num_unlabeled: int = 20,
    shape: Sequence[int] = (24, 48, 48),
    seed: int = 0,
) -> Path:
    """Write the volume phantoms in nnU-Net v2 raw format under raw_root and return their folder
    (raw_root/DatasetXXX_name). Deterministic in all arguments; existing files are overwritten."""
    counts = (num_train, num_test, num_unlabeled)
    check_counts(dataset_id, counts)
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"

    def make(split: str, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        style = _style_for(seed, split, i, VOLUME_STYLES)
        return (*make_volume(_volume_rng(seed, split, i), shape, style), style)

    cases = write_cases(folder, counts, make, _write)
    description = (
        "Synthetic 3D abdominal phantoms in CT, MR T1 and MR T2 styles, 3 mm slices of 1 mm pixels "
        "(nnunetv2_vismae 3D demo dataset)."
    )
    write_dataset_json(folder, counts, description, __name__, VOLUME_STYLES)
    meta = {
        "generator": __name__,
        "version": VOLUMES_VERSION,
        "seed": int(seed),
        "shape": [int(n) for n in shape],
        "spacing_mm": list(SPACING_MM),
        "labels": LABELS,
        "styles": list(VOLUME_STYLES),
        "labeled_styles": list(VOLUME_STYLES),
        "cases": cases,
    }
    (folder / "phantoms.json").write_text(json.dumps(meta, indent=1))
    return folder
