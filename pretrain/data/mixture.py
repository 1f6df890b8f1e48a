"""Random 2D patches (or 3D crops of volumes) from a weighted mixture of sources, as a pure function of
the sample index.

Sample ``k`` of rank ``r`` is drawn with ``numpy.random.default_rng((seed, r, k))``: which source
(by weight), which slice or volume (from this rank's shard of that source), which patch position. The
data position of a run is therefore one integer, resuming is exact, and any number of data-loader
workers give the same stream. A volume is never read whole: the crop's position is drawn from its
shape, and the source reads only that region (``spatial_shape`` and ``load_region``).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pretrain.data.screening import REASONS, Unusable, first_line

MAX_DRAWS = 64  # draws per sample before concluding that (almost) nothing is usable


def crop_window(
    shape: tuple[int, ...], size: tuple[int, ...], rng: np.random.Generator
) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """A random patch of ``size`` in an image of spatial ``shape``, as if the image were zero-padded (at a
    random offset) where smaller and then cropped at random: the region of the image to read, and the
    zero padding before and after it on each axis. The draws are those of padding and cropping in turn,
    so the 2D data stream is what it always was."""
    pads = [max(s - n, 0) for n, s in zip(shape, size)]
    before = [int(rng.integers(p + 1)) for p in pads] if any(pads) else [0] * len(pads)
    starts = [int(rng.integers(n + p - s + 1)) - b for n, p, s, b in zip(shape, pads, size, before)]
    region = tuple(slice(max(a, 0), min(a + s, n)) for a, s, n in zip(starts, size, shape))
    padding = [(r.start - a, s - (r.stop - a)) for r, a, s in zip(region, starts, size)]
    return region, padding


def zero_pad(image: np.ndarray, padding: list[tuple[int, int]]) -> np.ndarray:
    """C x spatial... padded with zeros on the spatial axes (as is when there is nothing to pad).

    Zero is the mean intensity after z-score normalization, as in nnU-Net's own padding.
    """
    return np.pad(image, ((0, 0), *padding)) if any(a or b for a, b in padding) else image


def random_patch(image: np.ndarray, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """C x spatial... -> C x size...: zero-pad (at a random offset) what is smaller, then crop at random."""
    sizes = (size,) * (image.ndim - 1) if isinstance(size, int) else tuple(size)
    region, padding = crop_window(image.shape[1:], sizes, rng)
    return zero_pad(image[(slice(None), *region)], padding)


class PatchDataset(Dataset):
    """``dataset[k]`` -> C x patch x patch float32 tensor (C x Z x Y x X for a patch per axis of volumes), the
    k-th sample of this rank.

    Each source is sharded over ranks (rank r owns slices r, r + world, ...; a source smaller than
    the world is shared). ``weights`` are the probabilities of drawing from each source; by
    default proportional to the number of slices, i.e. uniform over all slices.
    """

    def __init__(
        self,
        sources: list,
        patch_size: int | list[int],
        weights: list[float] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.sources, self.patch_size, self.seed, self.rank = sources, patch_size, seed, rank
        self.patch = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)  # per axis
        self.volumes = len(self.patch) == 3
        self.shards = [
            np.arange(rank, len(s), world_size) if len(s) >= world_size else np.arange(len(s)) for s in sources
        ]
        w = np.asarray(weights if weights is not None else [len(s) for s in sources], dtype=np.float64)
        self.probabilities = w / w.sum()
        self.known_bad: set[str] = set()  # per process: each data-loader worker keeps its own

    def __len__(self) -> int:
        return int(sum(len(s) for s in self.shards))

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.sample(k)[0]

    def sample(self, k: int) -> tuple[torch.Tensor, list[list[str]]]:
        """The k-th patch and the files found unusable while drawing it ([[path, reason, detail]]).

        A slice that cannot be used is replaced by the next draw of the same generator, so the
        stream stays a pure function of k (and of which files are bad). Files already found bad in
        this process are skipped without reading them again. If all ``MAX_DRAWS`` draws fail, the
        patch is zeros and the report ends with ``["*exhausted*", message, ""]``.
        """
        rng = np.random.default_rng((self.seed, self.rank, int(k)))
        found = []
        for _ in range(MAX_DRAWS):
            s = int(rng.choice(len(self.sources), p=self.probabilities)) if len(self.sources) > 1 else 0
            source, shard = self.sources[s], self.shards[s]
            index = int(shard[rng.integers(len(shard))])
            origin = source.origin(index) if hasattr(source, "origin") else f"{source.name}:{index}"
            if origin in self.known_bad:
                continue
            try:
                if self.volumes:  # only the crop is read
                    region, padding = crop_window(source.spatial_shape(index), self.patch, rng)
                    image = source.load_region(index, region)
                else:
                    image = source.load_slice(index)
                if not np.isfinite(image).all():  # sources without their own screening
                    raise Unusable("nonfinite")
            except Exception as e:  # a worker must never crash on one bad file
                bad = e if isinstance(e, Unusable) else Unusable("pixels", first_line(e))
                self.known_bad.add(origin)
                found.append([origin, bad.reason, bad.detail])
                continue
            patch = zero_pad(image, padding) if self.volumes else random_patch(image, self.patch, rng)
            return torch.from_numpy(np.ascontiguousarray(patch)), found
        message = (
            f"None of {MAX_DRAWS} slices drawn for one sample could be used"
            + (f" (last: {found[-1][0]}: {REASONS[found[-1][1]]})" if found else "")
            + "; most of the corpus seems unusable."
        )
        c = self.sources[0].num_channels
        return torch.zeros(c, *self.patch), found + [["*exhausted*", message, ""]]

    def reporting(self) -> "ReportingView":
        """The view the data loader reads: (patch, JSON report of unusable files) per index."""
        return ReportingView(self)


class ReportingView(Dataset):
    """``view[k]`` -> (patch, JSON text of the files found unusable); collated into (batch, list)."""

    def __init__(self, dataset: PatchDataset):
        self.dataset = dataset

    def __getitem__(self, k: int) -> tuple[torch.Tensor, str]:
        patch, found = self.dataset.sample(k)
        return patch, json.dumps(found) if found else ""


class SampleIndexSampler(Sampler):
    """Endless sample indices ``start, start + 1, ...`` (the run's data position is ``start``)."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self):
        return itertools.count(self.start)
