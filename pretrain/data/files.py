"""Image files as a source of 2D slices: PNG/JPG/BMP/TIFF, DICOM files, NIfTI/MHA/NRRD volumes.

Images are read by ``nnunetv2_vismae.io.images`` (nnU-Net's readers where it has them),
converted to grayscale and normalized per image (one 2D file, or one whole volume).

A manifest (file, shape, and so the slice indices) is built once by reading only the headers and
cached in the output folder under a key derived from the input list (paths, sizes, modification
times, slicing axis), so a restart with the same inputs starts in seconds. Under torchrun each
rank screens its share of the headers and the shares are gathered.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Protocol

import numpy as np
from tqdm import tqdm

from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.images import SUPPORTED_ENDINGS, file_kind, read_image
from nnunetv2_vismae.io.normalization import Normalization, to_grayscale
from pretrain.data.screening import REASONS, Unusable, decode_failure, screen_header, screen_pixels
from pretrain.errors import PretrainUserError

MANIFEST_VERSION = 3  # 2: skipped files carry a reason key; 3: sizes and data files screened


def discover_files(folders: list[str] | None = None, file_list: str | None = None) -> list[str]:
    """Supported files under ``folders`` (recursively) or named in ``file_list``, absolute, sorted."""
    files: list[str] = []
    for folder in folders or []:
        if not os.path.isdir(folder):
            raise PretrainUserError(f"Input folder {folder} does not exist or is not a folder.")
        for root, _, names in os.walk(folder):
            files.extend(os.path.abspath(os.path.join(root, n)) for n in names if file_kind(n))
    if file_list is not None:
        if not os.path.isfile(file_list):
            raise PretrainUserError(f"File list {file_list} does not exist.")
        base = os.path.dirname(os.path.abspath(file_list))
        with open(file_list) as f:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                path = os.path.abspath(os.path.join(base, line))
                if not os.path.isfile(path):
                    raise PretrainUserError(f"{file_list} line {line_no} names {line}, which does not exist.")
                if file_kind(path) is None:
                    raise PretrainUserError(
                        f"{file_list} line {line_no} names {line}, which is not one of "
                        f"the supported types {' '.join(SUPPORTED_ENDINGS)}."
                    )
                files.append(path)
    return sorted(set(files))


def manifest_key(files: list[str], axis: str) -> str:
    h = hashlib.sha256()
    h.update(f"v{MANIFEST_VERSION} axis={axis}\n".encode())
    for f in files:
        st = file_stat(f)
        h.update(f"{f}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def file_stat(path: str) -> os.stat_result:
    """The file's stat, or the link's own for a symbolic link to nothing (screening skips and counts it)."""
    try:
        return os.stat(path)
    except OSError:
        return os.lstat(path)


def build_manifest(files: list[str], show_progress: bool = True) -> dict:
    """Screen every header once: ``files`` = [[path, [Z, Y, X], components]],
    ``skipped`` = [[path, reason, detail]] (reason: a key of ``screening.REASONS``)."""
    entries, skipped = [], []
    disable = not show_progress or len(files) < 1000
    for f in tqdm(files, desc="Reading image headers", unit="file", disable=disable):
        try:
            shape, comps = screen_header(f)
            entries.append([f, list(shape), comps])
        except Unusable as e:  # large corpora have some; counted, and the run decides if too many
            skipped.append([f, e.reason, e.detail])
    return {"version": MANIFEST_VERSION, "files": entries, "skipped": skipped}


def merge_manifests(parts: list[dict], files: list[str]) -> dict:
    """One manifest of the manifests of disjoint shares of ``files``, in the order of ``files``."""
    position = {f: i for i, f in enumerate(files)}

    def in_order(kind: str) -> list:
        return sorted((entry for part in parts for entry in part[kind]), key=lambda entry: position[entry[0]])

    return {"version": MANIFEST_VERSION, "files": in_order("files"), "skipped": in_order("skipped")}


class Ranks(Protocol):
    """The processes of a run (``pretrain.runtime.Runtime``): which one this is, and an all-gather."""

    rank: int
    world_size: int

    def gather(self, value) -> list: ...


def load_or_build_manifest(files: list[str], axis: str, cache_dir: str | None, ranks: Ranks | None = None):
    """(manifest, its cache path): read from ``cache_dir`` if its key matches there for every rank,
    else screened, each rank its share of ``files`` (gathered, so no rank waits idle in a collective
    that times out), and cached by rank 0."""
    rank, world, gather = (ranks.rank, ranks.world_size, ranks.gather) if ranks else (0, 1, lambda v: [v])
    key = manifest_key(files, axis)
    path = os.path.join(cache_dir, f"manifest_{key}.json") if cache_dir else None
    if all(gather(bool(path) and os.path.isfile(path))):  # every rank reads the same cache, or all screen
        with open(path) as f:
            return json.load(f), path
    manifest = merge_manifests(gather(build_manifest(files[rank::world], show_progress=rank == 0)), files)
    manifest.update(key=key, axis=axis)
    if path and rank == 0:
        write_json_atomic(path, manifest, indent=None)
    return manifest, path


def slice_axes(shape_zyx, axis: str) -> tuple[int, ...]:
    """The array axes a file of shape (Z, Y, X) is cut along for ``--axis``: a 2D image (Z = 1) along 0 only."""
    if shape_zyx[0] == 1:
        return (0,)
    return (0, 1, 2) if axis == "all" else (int(axis),)


def read_screened(path: str, expected_zyx) -> np.ndarray:
    """1 x Z x Y x X grayscale as read, screened against the header's shape; raises Unusable."""
    try:
        image = read_image(path)
    except Exception as e:  # truncated data, a missing codec, ...: every reader raises its own
        raise decode_failure(path, e) from None
    screen_pixels(image, expected_zyx)
    return to_grayscale(image)


class FileSource:
    """2D slices of image files, grayscale, normalized per image; ``load_slice(i)`` -> 1 x H x W float32.

    ``axis``: for volumes, slice along array axis 0, 1, 2 (numpy order Z, Y, X) or ``all`` three;
    2D images always give one slice.
    """

    num_channels = 1
    cache_volumes = 4

    def __init__(
        self,
        name: str,
        files: list[str],
        axis: str = "0",
        normalization: Normalization = Normalization(),
        cache_dir: str | None = None,
        ranks: Ranks | None = None,
    ):
        if not files:
            raise PretrainUserError(f"Source {name} contains no supported image files ({' '.join(SUPPORTED_ENDINGS)}).")
        self.name, self.axis, self.normalization = name, axis, normalization
        manifest, self.manifest_path = load_or_build_manifest(files, axis, cache_dir, ranks)
        self.files = [e[0] for e in manifest["files"]]
        self.shapes = [tuple(e[1]) for e in manifest["files"]]
        self.skipped = manifest["skipped"]
        self.num_items = len(files)
        units = []  # (file index, axis, number of slices)
        for fi, (_, shape, _) in enumerate(manifest["files"]):
            for a in slice_axes(shape, axis):
                units.append((fi, a, shape[a]))
        if not units:
            path, reason, detail = self.skipped[0]
            raise PretrainUserError(
                f"Source {name}: none of its {len(files)} files can be used (e.g. {path}: "
                f"{REASONS[reason]}{f', {detail}' if detail else ''})."
            )
        self.units = np.array(units, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.units[:, 2])])
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[str, int, int]:
        """Flat slice index -> (file, axis, slice index along axis)."""
        u = int(np.searchsorted(self.offsets, index, side="right") - 1)
        fi, axis, _ = self.units[u]
        return self.files[fi], int(axis), int(index - self.offsets[u])

    def origin(self, index: int) -> str:
        """The file a flat slice index comes from (what is counted when it cannot be used)."""
        return self.files[int(self.units[np.searchsorted(self.offsets, index, side="right") - 1][0])]

    def _read(self, file_index: int) -> np.ndarray:
        return read_screened(self.files[file_index], self.shapes[file_index])

    def _volume(self, file_index: int) -> np.ndarray:
        """1 x Z x Y x X, grayscale and normalized (a small LRU cache per data-loader worker)."""
        if file_index in self._cache:
            self._cache.move_to_end(file_index)
            return self._cache[file_index]
        image = self.normalization(self._read(file_index))
        self._cache[file_index] = image
        if len(self._cache) > self.cache_volumes:
            self._cache.popitem(last=False)
        return image

    def load_slice(self, index: int) -> np.ndarray:
        u = int(np.searchsorted(self.offsets, index, side="right") - 1)
        fi, axis, _ = (int(v) for v in self.units[u])
        volume = self._volume(fi)
        return np.ascontiguousarray(np.take(volume, int(index - self.offsets[u]), axis=axis + 1))

    def summary(self) -> dict:
        return image_source_summary(self, "files")


def image_source_summary(source, kind: str) -> dict:
    """What the run's record says of an image-file source (``files``) or a pack of them (``pack``)."""
    return {
        "type": kind,
        "name": source.name,
        "num_files": len(source.files),
        "num_skipped": len(source.skipped),
        "num_slices": len(source),
        "axis": source.axis,
        "normalization": source.normalization.to_json(),
    }
