"""A pack of volumes: image files preprocessed once exactly as nnU-Net preprocesses dataset D's cases
(``nnUNetv2_vismae_pack --preprocess-like D -p PLANS -c 3d_fullres``), stored so that pretraining reads
random 3D crops of them and only the chunks a crop touches are decompressed.

The layout is a pack's (``pretrain.data.pack``), with volumes for slices:

- ``settings.json`` and the index ``pack.json`` record whose preprocessing the volumes are
  (``preprocessed_like``: D's folder name, the plans identifier, the configuration, and a hash of D's
  plans file, dataset.json and the configuration), so that a pack is refused by a run of other plans.
- ``shards/KK/KEY.json``: one record per file: its preprocessed shape Z x Y x X, the file's spacing and
  its array, or the reason it is unusable. Plain JSON: nothing is pickled.
- ``shards/KK/KEY_v.b2nd``: the preprocessed volume, 1 x Z x Y x X float16 in blosc2 chunks and blocks
  sized for the configuration's patch as nnU-Net sizes its own (``comp_blosc2_params``).
"""

from __future__ import annotations

import functools
import json
import os
import re

import numpy as np

from nnunetv2_vismae.errors import shown
from nnunetv2_vismae.io.atomic import write_json_atomic
from nnunetv2_vismae.io.images import MAX_DECODED_BYTES, decoded_bytes
from nnunetv2_vismae.io.lock import claim_output_folder
from nnunetv2_vismae.io.nnunet import preprocessed_folder
from pretrain.data.nnunet import preprocessing_summary
from pretrain.data.pack import (
    FLOAT16_MAX,
    INDEX_FILE,
    PACK_VERSION,
    SHARDS,
    PackSource,
    _is_count,
    _is_number,
    _is_reason,
    check_settings,
    checked_index,
    job_outcome,
    load_index,
    listed_entries_problem,
    record_path,
    run_jobs,
    shard_key,
    write_array,
)
from pretrain.data.preprocess_like import CasePreprocessor, target_fingerprint
from pretrain.data.screening import Unusable, first_line
from pretrain.errors import PretrainUserError

LIKE = "preprocessed_like"  # the index entry that makes a pack one of volumes
VOLUME_NAME = re.compile(r"shards[/\\](?P<kk>[0-9a-f]{2})[/\\](?P=kk)[0-9a-f]{22}_v\.b2nd")


def like_identity(dataset: str, plans: str, configuration: str) -> dict:
    """Whose preprocessing a pack's volumes are: D's folder, plans, configuration, and a hash of their files."""
    folder = str(preprocessed_folder(dataset, PretrainUserError))
    for name in (f"{plans}.json", "dataset.json"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise PretrainUserError(f"{folder} has no {name}; run nnUNetv2_plan_and_preprocess -d {dataset} first.")
    target = target_fingerprint(folder, plans, configuration)
    return {"dataset": os.path.basename(folder), "plans": plans, "configuration": configuration, "target": target}


def volume_pack_settings(identity: dict) -> dict:
    return {"version": PACK_VERSION, LIKE: identity}


# ---------------------------------------------------------------------------------- writing
def pack_volume(path: str, pack: str, like: tuple[str, str, str]) -> dict:
    """Preprocess one file as ``like`` = (D's folder, plans, configuration) preprocesses D's cases and store
    it; its record (also written to its shard)."""
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

    key = shard_key(path)
    preprocessor = CasePreprocessor(*like)
    try:
        data, properties = preprocessed(preprocessor, path)
        relative = os.path.join(SHARDS, key[:2], f"{key}_v.b2nd")
        patch = tuple(preprocessor.configuration.patch_size)
        blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
        write_array(data, pack, relative, chunks=chunks, blocks=blocks)
        spacing = [float(s) for s in properties["spacing"]]
        record = {"path": path, "shape": list(data.shape[1:]), "spacing": spacing, "array": relative}
    except Unusable as e:
        record = {"path": path, "reason": e.reason, "detail": e.detail}
    write_json_atomic(record_path(pack, key), record, indent=None)
    return record


def preprocessed(preprocessor: CasePreprocessor, path: str) -> tuple[np.ndarray, dict]:
    """1 x Z x Y x X float16 of nnU-Net's preprocessing of ``path``, screened; raises Unusable."""
    try:
        data, properties = preprocessor.run(path)
    except Unusable:
        raise
    except Exception as e:  # nnU-Net's reader or preprocessing failed on this file
        raise Unusable("pixels", first_line(e)) from None
    if data.shape[0] != 1:
        raise Unusable("components", f"{data.shape[0]} channels after nnU-Net's reader, expected one")
    if decoded_bytes(data.shape[1:], 1) > MAX_DECODED_BYTES:
        raise Unusable("size", f"{list(data.shape[1:])} voxels after resampling")
    if not np.isfinite(data).all() or np.abs(data).max() > FLOAT16_MAX:
        raise Unusable("nonfinite", f"preprocessed values not finite or beyond float16's range (±{FLOAT16_MAX:g})")
    if data.min() == data.max():  # nothing to reconstruct (nnU-Net's z-score makes a constant image zeros)
        raise Unusable("constant")
    return np.ascontiguousarray(data, dtype=np.float16), properties


def read_volume_record(pack: str, path: str) -> dict | None:
    """The record of a file packed already (by this or a killed run), or None: not packed yet, a record that
    is not one ``pack_volume`` writes, or one whose array is gone (packed again, then)."""
    try:
        with open(record_path(pack, shard_key(path))) as f:
            record = json.load(f)
    except (OSError, ValueError):  # not packed yet, or unreadable
        return None
    if volume_record_problem(record, path) is not None:
        return None
    return record if "reason" in record or os.path.isfile(os.path.join(pack, record["array"])) else None


def volume_record_problem(record, path: str) -> str | None:
    if not isinstance(record, dict) or record.get("path") != path:
        return f"the record of {path} is {shown(record)}"
    if set(record) == {"path", "reason", "detail"}:
        usable = _is_reason(record["reason"]) and isinstance(record["detail"], str)
        return None if usable else f"the record of {path} is {shown(record)}"
    if set(record) != {"path", "shape", "spacing", "array"}:
        return f"the record of {path} has the entries {shown(sorted(record))}"
    return volume_entry_problem([path, record["shape"], record["spacing"], record["array"]])


def volume_entry_problem(entry) -> str | None:
    """What is wrong with an index entry ``[path, [Z, Y, X], [spacing Z, Y, X], array name]``, or None."""
    if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)):
        return f"the entry {shown(entry)} is not [path, shape, spacing, array]"
    path, shape, spacing, array = entry
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_count(n) for n in shape)):
        return f"the shape of {path} is {shown(shape)}, expected three positive integers"
    if decoded_bytes(shape, 1) > MAX_DECODED_BYTES:
        return f"the shape of {path} is {shown(shape)}, more than a volume may be ({MAX_DECODED_BYTES} bytes decoded)"
    if not (isinstance(spacing, list) and len(spacing) == 3 and all(_is_number(s) and s > 0 for s in spacing)):
        return f"the spacing of {path} is {shown(spacing)}, expected three positive numbers"
    if not (isinstance(array, str) and VOLUME_NAME.fullmatch(array)):
        return f"the array {shown(array)} of {path} is not shards/KK/KEY_v.b2nd"
    return None


def write_volume_pack(pack: str, files: list[str], like: tuple[str, str, str], num_processes: int, command: str):
    """Pack ``files`` preprocessed as ``like`` = (dataset, plans, configuration) into the folder ``pack``
    (created, or continued), locked for ``command`` meanwhile; the index. A pack of other plans is refused."""
    identity = like_identity(*like)
    folder = str(preprocessed_folder(like[0], PretrainUserError))
    CasePreprocessor(folder, *like[1:])  # one sentence for plans it cannot follow, before any worker starts
    with claim_output_folder(pack, command, (os.path.join(SHARDS, "[0-9a-f][0-9a-f]"),)):
        check_settings(pack, volume_pack_settings(identity), "--preprocess-like/-p/-c (and plans)")
        todo = [f for f in files if read_volume_record(pack, f) is None]  # a corrupt record is packed again
        job = functools.partial(job_outcome, pack_volume)
        run_jobs([(f, pack, (folder, *like[1:])) for f in todo], len(files), num_processes, job)
        return assemble_volume_index(pack, files, identity)


def assemble_volume_index(pack: str, files: list[str], identity: dict) -> dict:
    """The index of a pack whose every file has its record, in the order of ``files``."""
    entries, skipped = [], []
    for path in files:
        record = read_volume_record(pack, path)
        if record is None:
            raise PretrainUserError(f"{pack} has no record of {path}; run the same nnUNetv2_vismae_pack command again.")
        if "reason" in record:
            skipped.append([path, record["reason"], record["detail"]])
        else:
            entries.append([path, record["shape"], record["spacing"], record["array"]])
    index = {**volume_pack_settings(identity), "num_items": len(files), "files": entries, "skipped": skipped}
    write_json_atomic(os.path.join(pack, INDEX_FILE), index, indent=None)
    return index


# ---------------------------------------------------------------------------------- reading
def volume_index_problem(index: dict) -> str | None:
    expected = {"version", LIKE, "num_items", "files", "skipped"}
    if set(index) != expected:
        return f"its entries are {shown(sorted(index))}, expected {sorted(expected)}"
    identity = index[LIKE]
    if not (isinstance(identity, dict) and set(identity) == {"dataset", "plans", "configuration", "target"}):
        return f"{LIKE} is {shown(identity)}, expected the dataset, plans, configuration and target"
    if not all(isinstance(v, str) for v in identity.values()):
        return f"{LIKE} is {shown(identity)}, expected strings"
    return listed_entries_problem(index, volume_entry_problem)


def open_pack(pack: str, volumes: bool, like: tuple[str | None, str, str]):
    """The source a pack is for a run of 2D images or of volumes; a pack of the other kind, or of volumes
    preprocessed with other plans than ``like`` = (the dataset whose plans the run follows, plans,
    configuration), is refused in one sentence."""
    index = load_index(pack)
    if (LIKE in index) != volumes:
        if volumes:
            raise PretrainUserError(
                f"{pack} is a pack of 2D slices; a 3D encoder pretrains on a pack of volumes "
                "(nnUNetv2_vismae_pack --preprocess-like DATASET -c 3d_fullres)."
            )
        raise PretrainUserError(f"{pack} is a pack of volumes; a 2D encoder pretrains on a pack of 2D slices.")
    return VolumePackSource(pack, like) if volumes else PackSource(pack)


def preprocessing_of(dataset: str, plans: str, configuration: str) -> dict:
    """The spacing and normalization of the volumes (what a checkpoint records of its data)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with open(os.path.join(preprocessed_folder(dataset, PretrainUserError), f"{plans}.json")) as f:
        plans_json = json.load(f)
    return preprocessing_summary(plans_json, PlansManager(plans_json).get_configuration(configuration))


class VolumePackSource(PackSource):
    """The volumes of a pack, one item each: ``load_region(i, region)`` -> 1 x the region of Z x Y x X,
    float32, reading only that region (the arrays are opened as a pack of slices opens its own)."""

    def __init__(self, pack: str, like: tuple[str | None, str, str]):
        index = checked_index(pack, load_index(pack), volume_index_problem)
        identity = index[LIKE]
        dataset, plans, configuration = like
        expected = like_identity(dataset or identity["dataset"], plans, configuration)
        if identity != expected:
            raise PretrainUserError(
                f"{pack} holds volumes preprocessed like {identity['dataset']} with plans {identity['plans']} "
                f"-c {identity['configuration']} (target {identity['target']}), not like "
                f"{expected['dataset']} -p {plans} -c {configuration} (target {expected['target']}); pack them "
                "again with those plans or pretrain with the pack's."
            )
        self.name, self.folder, self.like = pack, os.path.abspath(pack), identity
        self.preprocessing = preprocessing_of(dataset or identity["dataset"], plans, configuration)
        self.files = [path for path, *_ in index["files"]]
        self.skipped = index["skipped"]
        self.num_items = int(index["num_items"])
        if not self.files:
            raise PretrainUserError(f"Pack {pack} holds no usable volumes ({len(self.skipped)} files are unusable).")
        self.spatial_shapes = [tuple(shape) for _, shape, _, _ in index["files"]]
        self.unit_files = np.arange(len(self.files), dtype=np.int64)  # one unit (array) per volume
        self.unit_arrays = [name for *_, name in index["files"]]
        self.offsets = np.arange(len(self.files) + 1, dtype=np.int64)
        self._arrays, self._pid = {}, os.getpid()

    def spatial_shape(self, index: int) -> tuple[int, int, int]:
        return self.spatial_shapes[index]

    def load_region(self, index: int, region: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self._array(self.unit_arrays[index])[(slice(None), *region)], dtype=np.float32)

    def summary(self) -> dict:
        return {
            "type": "pack",
            "name": self.name,
            "num_files": len(self.files),
            "num_skipped": len(self.skipped),
            "num_volumes": len(self),
            LIKE: self.like,
            **self.preprocessing,
        }
