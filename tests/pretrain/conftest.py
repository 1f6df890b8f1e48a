"""Fixtures for the pretraining tests (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def png_folder(tmp_path):
    """Four small PNGs: RGB and gray, some smaller than the 32-pixel patch."""
    from PIL import Image

    folder = tmp_path / "pngs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 36), (24, 30), (48, 48), (33, 64)]):
        yy, xx = np.mgrid[:h, :w]
        base = (np.sin(xx / 3.0 + i) + np.cos(yy / 4.0)) * 60 + 128 + rng.normal(0, 5, (h, w))
        img = np.clip(base, 0, 255).astype(np.uint8)
        if i % 2 == 0:
            Image.fromarray(np.stack([img, img // 2, 255 - img], -1)).save(folder / f"rgb{i}.png")
        else:
            Image.fromarray(img).save(folder / "sub" / f"gray{i}.png")
    return str(folder)
