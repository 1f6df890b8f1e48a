"""Synthetic abdominal phantoms: the embedded default dataset of the demo.

Every case is an axial "slice" through a randomly drawn abdomen: a body outline with subcutaneous
fat and a muscle wall, a spine, bowel loops, a stomach and a gallbladder (unlabeled distractors),
an aorta and an inferior vena cava (unlabeled), and three labeled organs::

    1 liver    large, irregular, two lobes, may touch a kidney and the IVC; it holds one or two
               lesions of varying contrast (labeled liver, as liver datasets label tumours)
    2 kidney   zero to two ellipses with cortex and medulla
    3 spleen   medium, elongated, often about as bright as the liver

The same anatomy is rendered in one of four appearance styles:

    ``ct``     Hounsfield units; arterial or portal-venous contrast phase; gaussian noise of
               varying dose, an additive cupping / bias field
    ``mr_t1``  arbitrary units, fat bright, vessels dark (flow void) or bright (contrast), a
               multiplicative coil bias field and Rician noise
    ``mr_t2``  fluid, lesions, kidneys and spleen bright, liver dark: largely inverted contrast
    ``us``     ultrasound: sector field of view, speckle, depth attenuation, acoustic shadows
               behind bone and gas, log compression; labels are cut to the visible sector

Anatomy, contrasts, noise, blur and bias differ from case to case, so that a segmentation model
needs many labeled cases to cover the variation: this is what makes the set useful for measuring
label efficiency. The generator is vectorised numpy; a 128x128 case takes about 20 ms of CPU.

Images are written as 2D NIfTI (``.nii.gz``) in float32 so that Hounsfield units and MR signal
survive; nnU-Net reads them with ``SimpleITKIO`` as 2D data. The dataset folder holds::

    imagesTr/ labelsTr/      labeled training cases   (phantom_tr_XXX)
    imagesTs/ labelsTs/      held-out labeled test set (phantom_ts_XXX)
    imagesUnlabeled/         pool for pretraining      (phantom_un_XXXX), never labeled cases
    dataset.json             nnU-Net v2 dataset description
    phantoms.json            style of every case and the generator settings

Every case has its own random stream derived from ``(seed, split, index)``, so a case does not
change when the number of cases in any split changes, and no two cases share a stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

STYLES: Tuple[str, ...] = ("ct", "mr_t1", "mr_t2", "us")
LABELS: Dict[str, int] = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
SPLITS: Dict[str, int] = {"tr": 0, "ts": 1, "un": 2}
FILE_ENDING = ".nii.gz"
UNLABELED_FOLDER = "imagesUnlabeled"
PIXEL_SPACING_MM = 2.5
GENERATOR_VERSION = 2

# Tissue indices of the intermediate tissue map; each style gives every tissue a mean and a texture.
AIR, FAT, MUSCLE, MESENTERY, BONE, MARROW, CSF, LIVER, KCORTEX, KMEDULLA, SPLEEN, VESSEL, LESION, BOWEL, GAS, FLUID = (
    range(16)
)
N_TISSUES = 16


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def _grid(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised anatomical coordinates (y, x), each (size, size), after a random similarity
    transform of the whole case (rotation, zoom, shift). y grows posteriorly, x to the image right."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    angle = rng.uniform(-0.25, 0.25)
    zoom = rng.uniform(0.85, 1.15)
    ty, tx = rng.uniform(-0.07, 0.07, 2)
    ca, sa = np.cos(angle), np.sin(angle)
    y = (ca * yy - sa * xx) * zoom + ty
    x = (sa * yy + ca * xx) * zoom + tx
    return y.astype(np.float32), x.astype(np.float32)


def _blob(
    rng: np.random.Generator,
    y: np.ndarray,
    x: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float = 0.0,
    roughness: float = 0.15,
    n_harmonics: int = 4,
) -> np.ndarray:
    """Normalised radius field of a star-shaped blob: < 1 inside, 1 on the outline.

    The outline is an ellipse (semi-axes ry, rx, rotated by angle) whose radius is modulated by
    random harmonics 2..n_harmonics+1 of relative amplitude up to roughness."""
    ca, sa = np.cos(angle), np.sin(angle)
    dy, dx = y - cy, x - cx
    a = ((ca * dx + sa * dy) / rx).astype(np.float32)
    b = ((-sa * dx + ca * dy) / ry).astype(np.float32)
    rho = np.sqrt(a * a + b * b)
    amplitude = roughness * rng.uniform(0.0, 1.0, n_harmonics) / np.sqrt(np.arange(1, 1 + n_harmonics))
    phase = rng.uniform(0.0, 2 * np.pi, n_harmonics)
    # harmonics cos(k theta + phase) as real parts of (e^{i theta})^k e^{i phase}: no trigonometry per pixel
    unit = ((a + 1j * b) / np.maximum(rho, 1e-12)).astype(np.complex64)
    power = unit * unit
    outline = np.ones_like(rho)
    for amp, ph in zip(amplitude, phase):
        outline += np.float32(amp) * (power * np.complex64(np.exp(1j * ph))).real
        power = power * unit
    return (rho / np.maximum(outline, 0.3)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian random field with correlation length sigma (pixels), zero mean, unit std."""
    field = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _low_frequency_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth bias-like field, zero mean, unit std: a random 2nd order polynomial plus a very
    smooth random field."""
    c = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    p = rng.normal(0, 1, 5)
    field = p[0] * yy + p[1] * xx + p[2] * yy * xx + p[3] * yy**2 + p[4] * xx**2
    field = field + 0.5 * _smooth_noise(rng, size, size / 5)
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _anatomy(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, float]]:
    """Draw one abdomen. Returns the tissue map (uint8, tissue indices), the label map (uint8,
    LABELS) and per-case lesion settings."""
    y, x = _grid(rng, size)
    tissue = np.zeros((size, size), np.uint8)
    label = np.zeros((size, size), np.uint8)

    # body, subcutaneous fat, muscle wall
    by, bx = rng.uniform(0.55, 0.72), rng.uniform(0.78, 0.93)
    body = _blob(rng, y, x, 0.05, 0.0, by, bx, 0.0, roughness=0.06)
    fat_t = rng.uniform(0.05, 0.16)
    muscle_t = rng.uniform(0.04, 0.08)
    tissue[body < 1] = FAT
    tissue[body < 1 - fat_t] = MUSCLE
    cavity = body < 1 - fat_t - muscle_t
    tissue[cavity] = MESENTERY

    # spine with canal and paraspinal muscles (posterior, unlabeled)
    sy, sx = 0.05 + by * rng.uniform(0.45, 0.6), rng.uniform(-0.05, 0.05)
    sr = rng.uniform(0.08, 0.12)
    for side in (-1, 1):
        para = _blob(rng, y, x, sy + sr * 1.2, sx + side * sr * 1.9, sr * 1.1, sr * 1.4, side * 0.3, 0.1)
        tissue[(para < 1) & (body < 1 - fat_t)] = MUSCLE
    vertebra = _blob(rng, y, x, sy, sx, sr, sr * 1.1, 0.0, 0.05)
    tissue[vertebra < 1] = BONE
    tissue[vertebra < 0.75] = MARROW
    arch = _blob(rng, y, x, sy + sr * 1.5, sx, sr * 0.55, sr * 0.75, 0.0, 0.1)
    tissue[(arch < 1) & (vertebra >= 1)] = BONE
    tissue[_blob(rng, y, x, sy + sr * 1.45, sx, sr * 0.32, sr * 0.32, 0.0, 0.0) < 1] = CSF

    inside = cavity & (tissue == MESENTERY)

    # bowel loops and stomach: distractors with organ-like intensity, some with gas or fluid
    n_loops = rng.integers(3, 8)
    for _ in range(n_loops):
        cy, cx = rng.uniform(-0.45, 0.25) * by / 0.65, rng.uniform(-0.45, 0.55) * bx
        r = rng.uniform(0.05, 0.11)
        loop = _blob(rng, y, x, cy, cx, r, r * rng.uniform(0.7, 1.4), rng.uniform(0, np.pi), 0.2) < 1
        loop &= inside
        tissue[loop] = BOWEL
        content = rng.uniform()
        if content < 0.5:
            core = _blob(rng, y, x, cy, cx, r * 0.55, r * 0.55, 0.0, 0.1) < 1
            tissue[core & loop] = GAS if content < 0.25 else FLUID
    if rng.uniform() < 0.8:
        cy, cx = rng.uniform(-0.45, -0.2) * by / 0.65, rng.uniform(0.2, 0.45) * bx
        stomach = (
            _blob(rng, y, x, cy, cx, rng.uniform(0.12, 0.2), rng.uniform(0.12, 0.22), rng.uniform(0, np.pi), 0.2) < 1
        )
        stomach &= cavity
        tissue[stomach] = BOWEL
        tissue[stomach & (y < cy - rng.uniform(0.0, 0.08))] = GAS

    # liver: main body on the image left plus a left lobe towards the midline
    ly, lx = rng.uniform(-0.2, 0.05), -bx * rng.uniform(0.35, 0.55)
    liver = (
        _blob(
            rng,
            y,
            x,
            ly,
            lx,
            rng.uniform(0.25, 0.42),
            rng.uniform(0.22, 0.36),
            rng.uniform(-0.5, 0.5),
            roughness=0.25,
            n_harmonics=5,
        )
        < 1
    )
    if rng.uniform() < 0.75:
        liver |= (
            _blob(
                rng,
                y,
                x,
                ly - rng.uniform(0.1, 0.2),
                lx + rng.uniform(0.25, 0.5),
                rng.uniform(0.08, 0.16),
                rng.uniform(0.15, 0.3),
                rng.uniform(-0.4, 0.4),
                0.25,
            )
            < 1
        )
    liver &= cavity
    tissue[liver] = LIVER
    label[liver] = LABELS["liver"]

    # gallbladder: fluid pocket carved out of the liver's anterior edge (unlabeled)
    if rng.uniform() < 0.5:
        ys, xs = np.nonzero(liver)
        if ys.size:
            i = np.argmin(y[ys, xs] + 0.3 * rng.standard_normal(ys.size))
            r = rng.uniform(0.05, 0.09)
            gb = (
                _blob(rng, y, x, y[ys[i], xs[i]] + r * 0.5, x[ys[i], xs[i]], r * 1.4, r, rng.uniform(0, np.pi), 0.1) < 1
            )
            gb &= cavity
            tissue[gb] = FLUID
            label[gb] = 0

    # spleen: posterior on the image right, elongated, liver-like brightness
    spleen = (
        _blob(
            rng,
            y,
            x,
            rng.uniform(0.0, 0.3) * by / 0.65,
            bx * rng.uniform(0.45, 0.65),
            rng.uniform(0.26, 0.36),
            rng.uniform(0.15, 0.21),
            rng.uniform(-0.9, -0.2),
            0.25,
        )
        < 1
    )
    spleen &= cavity
    tissue[spleen] = SPLEEN
    label[spleen] = LABELS["spleen"]

    # kidneys: lateral to the spine, each present with probability 0.85; may touch liver / spleen
    for side in (-1, 1):
        if rng.uniform() < 0.85:
            kr = rng.uniform(0.12, 0.17)
            k = _blob(
                rng,
                y,
                x,
                sy - rng.uniform(0.0, 0.1),
                sx + side * rng.uniform(0.25, 0.4),
                kr * rng.uniform(1.1, 1.6),
                kr,
                side * rng.uniform(0.1, 0.6),
                0.12,
            )
            kmask = (k < 1) & cavity & (tissue != BONE)
            tissue[kmask] = KCORTEX
            tissue[kmask & (k < rng.uniform(0.45, 0.7))] = KMEDULLA
            label[kmask] = LABELS["kidney"]

    # aorta (left-anterior of the spine) and IVC (right-anterior, flattened, against the liver)
    ar = rng.uniform(0.05, 0.08)
    ay, ax_ = sy - sr - ar - rng.uniform(0.01, 0.05), sx + rng.uniform(0.02, 0.1)
    aorta = _blob(rng, y, x, ay, ax_, ar, ar, 0.0, 0.03) < 1
    ir = rng.uniform(0.05, 0.075)
    ivc = (
        _blob(
            rng,
            y,
            x,
            ay - rng.uniform(0.0, 0.06),
            ax_ - rng.uniform(0.12, 0.2),
            ir * rng.uniform(0.6, 1.0),
            ir * rng.uniform(1.0, 1.5),
            rng.uniform(-0.5, 0.5),
            0.08,
        )
        < 1
    )
    vessels = (aorta | ivc) & cavity
    tissue[vessels] = VESSEL
    label[vessels] = 0

    # lesions: one or two blobs inside the liver, part of its label
    liver_now = label == LABELS["liver"]
    ys, xs = np.nonzero(liver_now)
    n_lesions = rng.integers(1, 3) if ys.size else 0
    for _ in range(n_lesions):
        i = rng.integers(ys.size)
        r = rng.uniform(0.06, 0.12)
        lesion = (
            _blob(rng, y, x, y[ys[i], xs[i]], x[ys[i], xs[i]], r, r * rng.uniform(0.7, 1.3), rng.uniform(0, np.pi), 0.2)
            < 1
        )
        lesion &= liver_now
        tissue[lesion] = LESION

    lesion_settings = {"hyper": float(rng.uniform() < 0.3), "strength": float(rng.uniform(0.0, 1.0))}
    return tissue, label, lesion_settings


# ----------------------------------------------------------------------------------------------
# appearance
# ----------------------------------------------------------------------------------------------
def _tissue_image(
    rng: np.random.Generator, tissue: np.ndarray, mean: np.ndarray, texture: np.ndarray, coarse_sigma: float
) -> np.ndarray:
    """Piecewise-constant tissue means plus per-tissue textures (a fine and a coarse random field)."""
    size = tissue.shape[0]
    fine = _smooth_noise(rng, size, rng.uniform(0.6, 1.2))
    coarse = _smooth_noise(rng, size, coarse_sigma)
    mix = rng.uniform(0.3, 0.7)
    tex = mix * fine + (1 - mix) * coarse
    return (mean[tissue] + texture[tissue] * tex).astype(np.float32)


def _jitter(rng: np.random.Generator, base: Dict[int, Tuple[float, float]]) -> np.ndarray:
    """Draw each tissue's value from (mean, spread): uniform in mean +- spread."""
    out = np.zeros(N_TISSUES, np.float32)
    for t, (m, s) in base.items():
        out[t] = m + rng.uniform(-s, s)
    return out


def _render_ct(rng, tissue, lesion):
    phase = rng.choice(["arterial", "portal"])
    base = {
        AIR: (-1000, 0),
        FAT: (-100, 20),
        MUSCLE: (50, 10),
        MESENTERY: (-60, 30),
        BONE: (700, 250),
        MARROW: (250, 80),
        CSF: (10, 5),
        BOWEL: (40, 20),
        GAS: (-900, 60),
        FLUID: (8, 6),
    }
    organs = {
        "arterial": {LIVER: (75, 10), SPLEEN: (95, 20), KCORTEX: (190, 40), KMEDULLA: (90, 20), VESSEL: (280, 60)},
        "portal": {LIVER: (110, 15), SPLEEN: (115, 15), KCORTEX: (170, 30), KMEDULLA: (160, 30), VESSEL: (160, 30)},
    }
    base.update(organs[phase])
    mean = _jitter(rng, base)
    delta = 30 + 40 * lesion["strength"]
    mean[LESION] = mean[LIVER] + (delta if lesion["hyper"] else -delta)
    texture = np.zeros(N_TISSUES, np.float32) + 8
    texture[[BONE, MARROW]] = 120
    texture[[LIVER, SPLEEN, LESION]] = rng.uniform(3, 8)
    texture[AIR] = 0
    img = _tissue_image(rng, tissue, mean, texture, rng.uniform(2, 5))
    img = gaussian_filter(img, rng.uniform(0.5, 1.2))
    body = tissue != AIR
    img += body * rng.uniform(5, 25) * _low_frequency_field(rng, tissue.shape[0])
    noise_sd = rng.uniform(5, 15)
    noise = gaussian_filter(rng.standard_normal(tissue.shape).astype(np.float32), 0.6)
    img += noise_sd * noise / (noise.std() + 1e-8)
    return img


def _render_mr(rng, tissue, lesion, weighting):
    if weighting == "t1":
        base = {
            AIR: (0, 0),
            FAT: (900, 80),
            MUSCLE: (300, 50),
            MESENTERY: (700, 120),
            BONE: (60, 30),
            MARROW: (600, 100),
            CSF: (120, 40),
            LIVER: (480, 60),
            SPLEEN: (380, 50),
            KCORTEX: (400, 60),
            KMEDULLA: (300, 60),
            VESSEL: (60, 40) if rng.uniform() < 0.5 else (750, 120),
            BOWEL: (350, 80),
            GAS: (20, 10),
            FLUID: (120, 50),
        }
        factor = 1 - (0.3 + 0.3 * lesion["strength"]) * (-0.6 if lesion["hyper"] else 1)
    else:
        base = {
            AIR: (0, 0),
            FAT: (600, 100),
            MUSCLE: (200, 40),
            MESENTERY: (500, 120),
            BONE: (60, 30),
            MARROW: (400, 80),
            CSF: (950, 50),
            LIVER: (250, 50),
            SPLEEN: (520, 70),
            KCORTEX: (600, 80),
            KMEDULLA: (700, 80),
            VESSEL: (50, 30),
            BOWEL: (420, 100),
            GAS: (20, 10),
            FLUID: (950, 50),
        }
        factor = 1 + (0.5 + 1.0 * lesion["strength"]) * (1 if lesion["hyper"] or rng.uniform() < 0.7 else -0.5)
    mean = _jitter(rng, base)
    mean[LESION] = mean[LIVER] * factor
    texture = np.zeros(N_TISSUES, np.float32) + 25
    texture[[LIVER, SPLEEN, LESION]] = rng.uniform(10, 40)
    texture[AIR] = 0
    img = _tissue_image(rng, tissue, mean, texture, rng.uniform(2, 6))
    img = gaussian_filter(np.maximum(img, 0), rng.uniform(0.5, 1.3))
    img *= np.exp(rng.uniform(0.15, 0.5) * _low_frequency_field(rng, tissue.shape[0]))
    sigma = rng.uniform(0.01, 0.03) * float(mean.max())
    real = img + sigma * rng.standard_normal(img.shape).astype(np.float32)
    imag = sigma * rng.standard_normal(img.shape).astype(np.float32)
    img = np.sqrt(real * real + imag * imag)
    return img * rng.uniform(0.5, 2.0)


def _render_us(rng, tissue, lesion):
    size = tissue.shape[0]
    base = {
        AIR: (0.02, 0.01),
        FAT: (0.55, 0.1),
        MUSCLE: (0.35, 0.08),
        MESENTERY: (0.8, 0.1),
        BONE: (1.0, 0.0),
        MARROW: (0.9, 0.05),
        CSF: (0.05, 0.02),
        LIVER: (0.45, 0.05),
        SPLEEN: (0.25, 0.04),
        KCORTEX: (0.7, 0.08),
        KMEDULLA: (0.15, 0.05),
        VESSEL: (0.03, 0.02),
        BOWEL: (0.5, 0.12),
        GAS: (1.0, 0.0),
        FLUID: (0.03, 0.02),
    }
    mean = _jitter(rng, base)
    factor = 1 + (0.4 + 0.4 * lesion["strength"]) * (1 if lesion["hyper"] else -1)
    mean[LESION] = mean[LIVER] * factor
    texture = np.zeros(N_TISSUES, np.float32) + 0.05
    texture[[AIR, VESSEL, FLUID, CSF]] = 0.0
    echo = np.maximum(_tissue_image(rng, tissue, mean, texture, rng.uniform(2, 5)), 0.0)

    # sector field of view with its apex above the image's top edge
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    apex_y, apex_x = -1 - rng.uniform(0.1, 0.5), rng.uniform(-0.2, 0.2)
    depth = np.sqrt((yy - apex_y) ** 2 + (xx - apex_x) ** 2)
    angle = np.arctan2(xx - apex_x, yy - apex_y)
    half_width = rng.uniform(0.45, 0.8)
    max_depth = depth.max() - rng.uniform(0.0, 0.4)
    fov = (np.abs(angle) < half_width) & (depth < max_depth)

    # acoustic shadows: attenuate everything below bone or gas along the (vertical) beams
    blocker = np.isin(tissue, (BONE, GAS)).astype(np.float32)
    shadow = np.exp(-rng.uniform(0.15, 0.4) * np.cumsum(blocker, axis=0) + 0.3 * blocker)
    gain = np.exp(-rng.uniform(0.2, 0.9) * (depth - depth.min()))
    amplitude = echo * np.minimum(shadow, 1.0) * gain

    # speckle: magnitude of laterally elongated, correlated complex gaussian scatter
    sy, sx = rng.uniform(0.5, 1.0), rng.uniform(1.0, 2.2)
    re = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), (sy, sx))
    im = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), (sy, sx))
    speckle = np.sqrt(re * re + im * im)
    speckle /= speckle.mean() + 1e-8
    img = amplitude * (0.6 + 0.4 * speckle) * np.exp(0.2 * _low_frequency_field(rng, size))
    img = np.log1p(rng.uniform(5, 20) * img)
    img = np.clip(img / np.percentile(img[fov], 99.5) * 255.0, 0, 255) * fov
    return img.astype(np.float32), fov


def make_case(rng: np.random.Generator, size: int = 128, style: str = "ct") -> Tuple[np.ndarray, np.ndarray]:
    """One phantom: (image float32 (size, size), label uint8 (size, size)) in the given style.

    The image is in the style's own units (HU for ``ct``, arbitrary units for MR, 0..255 for
    ``us``). Labels follow LABELS; in ``us`` they are cut to the visible sector."""
    if style not in STYLES:
        raise ValueError(f"unknown phantom style {style!r}; expected one of {', '.join(STYLES)}")
    if size < 32:
        raise ValueError(f"phantom size {size} is too small; expected at least 32 pixels")
    tissue, label, lesion = _anatomy(rng, size)
    if style == "ct":
        image = _render_ct(rng, tissue, lesion)
    elif style == "mr_t1":
        image = _render_mr(rng, tissue, lesion, "t1")
    elif style == "mr_t2":
        image = _render_mr(rng, tissue, lesion, "t2")
    else:
        image, fov = _render_us(rng, tissue, lesion)
        label = (label * fov).astype(np.uint8)
    return image.astype(np.float32), label.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# dataset on disk
# ----------------------------------------------------------------------------------------------
def _case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


def _style_for(seed: int, split: str, index: int, styles: Sequence[str] = STYLES) -> str:
    """Styles are balanced within every block of len(styles) consecutive cases, in a seed-dependent order,
    and a case's style does not depend on how many cases are generated."""
    block = np.random.default_rng([int(seed), SPLITS[split], 1_000_003, index // len(styles)])
    return styles[int(block.permutation(len(styles))[index % len(styles)])]


def _write(array: np.ndarray, path: Path) -> None:
    itk = sitk.GetImageFromArray(array)
    itk.SetSpacing((PIXEL_SPACING_MM, PIXEL_SPACING_MM))
    sitk.WriteImage(itk, str(path), True)


# each split's image and label folder, in the order of the counts (training, test, unlabeled)
SPLIT_FOLDERS = (("tr", "imagesTr", "labelsTr"), ("ts", "imagesTs", "labelsTs"), ("un", UNLABELED_FOLDER, None))


def check_counts(dataset_id: int, counts: Sequence[int]) -> None:
    """ValueError unless there is a training case and the id is nnU-Net's (1 to 999); counts per SPLIT_FOLDERS."""
    for what, n, minimum in zip(("num_train", "num_test", "num_unlabeled"), counts, (1, 0, 0)):
        if n < minimum:
            raise ValueError(f"{what} must be at least {minimum}, got {n}")
    if not 0 < dataset_id < 1000:
        raise ValueError(f"dataset_id must be between 1 and 999, got {dataset_id}")


def write_cases(
    folder: Path,
    counts: Sequence[int],
    make: Callable[[str, int], tuple[np.ndarray, np.ndarray, str]],
    write: Callable[[np.ndarray, Path], None],
) -> Dict[str, Dict[str, str]]:
    """Every split's cases (``make(split, i)`` -> image, label, style) in nnU-Net's folders and names, no empty
    folder (nnU-Net would look into it); {case: {split, style}}."""
    cases: Dict[str, Dict[str, str]] = {}
    for (split, image_dir, label_dir), n in zip(SPLIT_FOLDERS, counts):
        if n == 0:
            continue
        (folder / image_dir).mkdir(parents=True, exist_ok=True)
        if label_dir:
            (folder / label_dir).mkdir(parents=True, exist_ok=True)
        digits = 4 if split == "un" else 3
        for i in range(n):
            image, label, style = make(split, i)
            case = f"phantom_{split}_{i:0{digits}d}"
            write(image, folder / image_dir / f"{case}_0000{FILE_ENDING}")
            if label_dir:
                write(label, folder / label_dir / f"{case}{FILE_ENDING}")
            cases[case] = {"split": split, "style": style}
    return cases


def write_dataset_json(
    folder: Path, counts: Sequence[int], description: str, generator: str, styles: Sequence[str]
) -> None:
    """nnU-Net's dataset.json of a phantom dataset, with its unlabeled pool and styles."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    num_train, num_test, num_unlabeled = counts
    generate_dataset_json(
        str(folder),
        channel_names={"0": "image"},
        labels=dict(LABELS),
        num_training_cases=num_train,
        file_ending=FILE_ENDING,
        dataset_name=folder.name,
        description=description,
        license="CC0",
        converted_by=generator,
        overwrite_image_reader_writer="SimpleITKIO",
        numTest=num_test,
        numUnlabeled=num_unlabeled,
        unlabeled_folder=UNLABELED_FOLDER,
        styles=list(styles),
    )


def generate_dataset(
    raw_root: Union[str, Path],
    dataset_id: int = 800,
    name: str = "VisMAEPhantoms",
    num_train: int = 40,
    num_test: int = 20,
    num_unlabeled: int = 200,
    size: int = 128,
    seed: int = 0,
    labeled_styles: Sequence[str] = STYLES,
) -> Path:
    """Write the phantom dataset in nnU-Net v2 raw format under raw_root and return its folder
    (raw_root/DatasetXXX_name). Deterministic in all arguments; existing files are overwritten.

    The labeled training cases are drawn in ``labeled_styles`` only (an appearance shift when that is
    a subset); test cases and the unlabeled pool always come in every style."""
    labeled_styles = tuple(labeled_styles)
    unknown = sorted(set(labeled_styles) - set(STYLES))
    if unknown or not labeled_styles or len(set(labeled_styles)) < len(labeled_styles):
        raise ValueError(f"labeled_styles must be distinct styles of {', '.join(STYLES)}, got {list(labeled_styles)}")
    counts = (num_train, num_test, num_unlabeled)
    check_counts(dataset_id, counts)
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"

    def make(split: str, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        style = _style_for(seed, split, i, labeled_styles if split == "tr" else STYLES)
        return (*make_case(_case_rng(seed, split, i), size, style), style)

    cases = write_cases(folder, counts, make, _write)
    description = (
        "Synthetic 2D abdominal phantoms in CT, MR T1, MR T2 and ultrasound styles (nnunetv2_vismae demo dataset)."
    )
    write_dataset_json(folder, counts, description, __name__, STYLES)
    meta = {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": int(size),
        "pixel_spacing_mm": PIXEL_SPACING_MM,
        "labels": LABELS,
        "styles": list(STYLES),
        "labeled_styles": list(labeled_styles),
        "cases": cases,
    }
    (folder / "phantoms.json").write_text(json.dumps(meta, indent=1))
    return folder
