"""Random 2D patches from a weighted mixture of sources, as a pure function of the sample index.

Sample ``k`` of rank ``r`` is drawn with ``numpy.random.default_rng((seed, r, k))``: which source
(by weight), which slice (from this rank's shard of that source), which patch position. The data
position of a run is therefore one integer, resuming is exact, and any number of data-loader
workers give the same stream.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def random_patch(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """C x H x W -> C x size x size: zero-pad (at a random offset) what is smaller, then crop at random.

    Zero is the mean intensity after z-score normalization, as in nnU-Net's own padding.
    """
    c, h, w = image.shape
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        top, left = int(rng.integers(pad_h + 1)), int(rng.integers(pad_w + 1))
        image = np.pad(image, ((0, 0), (top, pad_h - top), (left, pad_w - left)))
        h, w = image.shape[1:]
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return image[:, y:y + size, x:x + size]


class PatchDataset(Dataset):
    """``dataset[k]`` -> C x patch x patch float32 tensor, the k-th sample of this rank.

    Each source is sharded over ranks (rank r owns slices r, r + world, ...; a source smaller than
    the world is shared). ``weights`` are the probabilities of drawing from each source; by
    default proportional to the number of slices, i.e. uniform over all slices.
    """

    def __init__(self, sources: list, patch_size: int, weights: list[float] | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.sources, self.patch_size, self.seed, self.rank = sources, patch_size, seed, rank
        self.shards = [np.arange(rank, len(s), world_size) if len(s) >= world_size else np.arange(len(s))
                       for s in sources]
        w = np.asarray(weights if weights is not None else [len(s) for s in sources], dtype=np.float64)
        self.probabilities = w / w.sum()

    def __len__(self) -> int:
        return int(sum(len(s) for s in self.shards))

    def __getitem__(self, k: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, self.rank, int(k)))
        s = int(rng.choice(len(self.sources), p=self.probabilities)) if len(self.sources) > 1 else 0
        shard = self.shards[s]
        image = self.sources[s].load_slice(int(shard[rng.integers(len(shard))]))
        return torch.from_numpy(np.ascontiguousarray(random_patch(image, self.patch_size, rng)))


class SampleIndexSampler(Sampler):
    """Endless sample indices ``start, start + 1, ...`` (the run's data position is ``start``)."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self):
        return itertools.count(self.start)
