"""Random 2D patches from a weighted mixture of sources, as a pure function of the sample index.

Sample ``k`` of rank ``r`` is drawn with ``numpy.random.default_rng((seed, r, k))``: which source
(by weight), which slice (from this rank's shard of that source), which patch position. The data
position of a run is therefore one integer, resuming is exact, and any number of data-loader
workers give the same stream.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pretrain.data.screening import REASONS, Unusable, first_line

MAX_DRAWS = 64  # draws per sample before concluding that (almost) nothing is usable


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
    return image[:, y : y + size, x : x + size]


class PatchDataset(Dataset):
    """``dataset[k]`` -> C x patch x patch float32 tensor, the k-th sample of this rank.

    Each source is sharded over ranks (rank r owns slices r, r + world, ...; a source smaller than
    the world is shared). ``weights`` are the probabilities of drawing from each source; by
    default proportional to the number of slices, i.e. uniform over all slices.
    """

    def __init__(
        self,
        sources: list,
        patch_size: int,
        weights: list[float] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.sources, self.patch_size, self.seed, self.rank = sources, patch_size, seed, rank
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
                image = source.load_slice(index)
                if not np.isfinite(image).all():  # sources without their own screening
                    raise Unusable("nonfinite")
            except Exception as e:  # a worker must never crash on one bad file
                bad = e if isinstance(e, Unusable) else Unusable("pixels", first_line(e))
                self.known_bad.add(origin)
                found.append([origin, bad.reason, bad.detail])
                continue
            return torch.from_numpy(np.ascontiguousarray(random_patch(image, self.patch_size, rng))), found
        message = (
            f"None of {MAX_DRAWS} slices drawn for one sample could be used"
            + (f" (last: {found[-1][0]}: {REASONS[found[-1][1]]})" if found else "")
            + "; most of the corpus seems unusable."
        )
        c = self.sources[0].num_channels
        return torch.zeros(c, self.patch_size, self.patch_size), found + [["*exhausted*", message, ""]]

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
