"""A packed corpus: image files screened, normalized and cut into 2D slices once, stored so that
training reads one slice at a time and never needs the raw files again.

Layout of a pack folder (written by ``nnUNetv2_vismae_pack``, read by ``PackSource``):

- ``settings.json``: what the slices are (format version, slicing axis, normalization); written
  first, so that a rerun with other flags is refused instead of mixing two kinds of slices.
- ``shards/KK/KEY.json``: one record per input file, written atomically once the file is done: its
  shape and its slice arrays, or the reason (a key of ``screening.REASONS``) it is unusable. KEY
  hashes the file's path, size and modification time, so a rerun skips the files packed already and
  packs a changed file again; KK (its first two characters) spreads millions of files over folders.
- ``shards/KK/KEY_aA.b2nd``: the slices along array axis A, N x H x W float16 in a blosc2 array
  with one compressed chunk per slice (what nnU-Net uses for its preprocessed data).
- ``pack.json``: the index, assembled from the records when every file is done: the usable files in
  input order with their arrays, the unusable ones with their reasons, and the settings.

Records and the index are checked when read (``record_problem``, ``index_problem``): a record that
is not what this module writes is packed again, an index that is not one is refused, and an array
is read only by its own name inside the pack's ``shards`` folder.

A packed slice is what ``FileSource`` yields for the same file (``files.read_screened``, the same
normalization, the same slicing), rounded to float16. Screening a whole file at packing time also
finds what ``FileSource`` finds only while training (undecodable pixels, NaN/Inf, constant images).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict

import numpy as np
from tqdm import tqdm

from nnunetv2_vismae.errors import shown
from nnunetv2_vismae.io.atomic import WriteError, atomic_path, write_json_atomic
from nnunetv2_vismae.io.images import MAX_DECODED_BYTES, decoded_bytes
from nnunetv2_vismae.io.lock import claim_output_folder
from nnunetv2_vismae.io.normalization import Normalization
from pretrain.data.files import file_stat, image_source_summary, read_screened, slice_axes
from pretrain.data.screening import REASONS, Unusable, first_line, screen_header
from pretrain.errors import PretrainUserError

PACK_VERSION = 1
SETTINGS_FILE = "settings.json"
INDEX_FILE = "pack.json"
SHARDS = "shards"
FLOAT16_MAX = float(np.finfo(np.float16).max)
AXES = ("0", "1", "2", "all")
# the only array names a pack has: shards/KK/KEY_aA.b2nd (KK = KEY's first two characters)
ARRAY_NAME = re.compile(r"shards[/\\](?P<kk>[0-9a-f]{2})[/\\](?P=kk)[0-9a-f]{22}_a(?P<axis>[012])\.b2nd")


def pack_settings(axis: str, normalization: Normalization) -> dict:
    """What the slices of a pack are, as JSON: compared on every rerun, recorded in the index."""
    return json.loads(json.dumps({"version": PACK_VERSION, "axis": axis, "normalization": asdict(normalization)}))


def settings_normalization(settings: dict) -> Normalization:
    n = settings["normalization"]
    return Normalization(
        n["scheme"], tuple(n["ct_clip"]) if n["ct_clip"] else None, tuple(n["ct_stats"]) if n["ct_stats"] else None
    )


def shard_key(path: str) -> str:
    """The name of a file's shard: its path, size and modification time hashed."""
    st = file_stat(path)
    return hashlib.sha256(f"{path}\t{st.st_size}\t{st.st_mtime_ns}".encode()).hexdigest()[:24]


def record_path(pack: str, key: str) -> str:
    return os.path.join(pack, SHARDS, key[:2], f"{key}.json")


# ---------------------------------------------------------------------------------- writing
def write_slices(volume: np.ndarray, axis: int, pack: str, key: str) -> list:
    """The slices of a 1 x Z x Y x X volume along ``axis`` as one blosc2 array (atomically);
    the index entry ``[axis, array path relative to the pack, number of slices]``."""
    slices = np.ascontiguousarray(np.moveaxis(volume[0], axis, 0), dtype=np.float16)
    relative = os.path.join(SHARDS, key[:2], f"{key}_a{axis}.b2nd")
    write_array(slices, pack, relative, chunks=(1, *slices.shape[1:]))
    return [axis, relative, int(slices.shape[0])]


def write_array(array: np.ndarray, pack: str, relative: str, **chunking) -> None:
    """``array`` as the blosc2 file ``relative`` of the pack (atomically), in the chunks (and blocks) given."""
    import blosc2

    cparams = {"codec": blosc2.Codec.LZ4HC, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1}
    destination = os.path.join(pack, relative)
    with atomic_path(destination) as tmp:
        try:
            blosc2.asarray(array, urlpath=tmp, mode="w", cparams=cparams, **chunking)
        except RuntimeError as e:  # blosc2's writer names no errno, even for a full disk
            raise WriteError(destination, _blosc2_write_failure(e, pack)) from e


def _blosc2_write_failure(error: RuntimeError, pack: str) -> str:
    """Why blosc2 could not write: no space left when the disk is full, else its own words."""
    try:
        if shutil.disk_usage(pack).free == 0:
            return os.strerror(errno.ENOSPC)
    except OSError:
        pass
    return f"blosc2's file writer failed ({first_line(error)})"


def pack_file(path: str, pack: str, axis: str, normalization: Normalization) -> dict:
    """Screen, read, normalize and store one file; its record (also written to its shard)."""
    key = shard_key(path)
    try:
        shape, _ = screen_header(path)
        volume = normalization(read_screened(path, shape))
        if np.abs(volume).max() > FLOAT16_MAX:
            raise Unusable("nonfinite", f"normalized values beyond float16's range (±{FLOAT16_MAX:g})")
        record = {
            "path": path,
            "shape": list(shape),
            "arrays": [write_slices(volume, a, pack, key) for a in slice_axes(shape, axis)],
        }
    except Unusable as e:
        record = {"path": path, "reason": e.reason, "detail": e.detail}
    write_json_atomic(record_path(pack, key), record, indent=None)
    return record


def pack_file_job(job: tuple) -> tuple[dict | None, list | None]:
    return job_outcome(pack_file, job)


def job_outcome(pack_one, job: tuple) -> tuple[dict | None, list | None]:
    """``pack_one(*job)`` in a worker process: (record, None), or (None, [file, reason]) when a write
    failed (a full disk), which the main process raises as the WriteError it is (one that crossed
    processes would be rebuilt from the wrong arguments)."""
    try:
        return pack_one(*job), None
    except WriteError as e:
        return None, [e.filename, e.strerror]


def read_record(pack: str, path: str) -> dict | None:
    """The record of a file packed already (by this or a killed run), or None: not packed yet, or a
    record that is not one this module writes, or whose arrays are gone (packed again, then)."""
    try:
        with open(record_path(pack, shard_key(path))) as f:
            record = json.load(f)
    except (OSError, ValueError):  # not packed yet, or unreadable
        return None
    if record_problem(record, path) is not None:
        return None
    return record if all(os.path.isfile(os.path.join(pack, name)) for _, name, _ in record.get("arrays", [])) else None


def record_problem(record, path: str) -> str | None:
    """What is wrong with a file's record (see ``pack_file``), or None."""
    if not isinstance(record, dict) or record.get("path") != path:
        return f"the record of {path} is {shown(record)}"
    if set(record) == {"path", "reason", "detail"}:
        usable = _is_reason(record["reason"]) and isinstance(record["detail"], str)
        return None if usable else f"the record of {path} is {shown(record)}"
    if set(record) != {"path", "shape", "arrays"}:
        return f"the record of {path} has the entries {shown(sorted(record))}"
    return entry_problem([path, record["shape"], record["arrays"]])


def entry_problem(entry) -> str | None:
    """What is wrong with an index entry ``[path, [Z, Y, X], [[axis, array name, slices], ...]]``,
    or None: every array is named as ``write_slices`` names it, one per axis, holding as many slices
    as the shape has along its axis, and the shape is no larger than an image may be."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)):
        return f"the entry {shown(entry)} is not [path, shape, arrays]"
    path, shape, arrays = entry
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_count(n) for n in shape)):
        return f"the shape of {path} is {shown(shape)}, expected three positive integers"
    if decoded_bytes(shape, 1) > MAX_DECODED_BYTES:
        return f"the shape of {path} is {shown(shape)}, more than an image may be ({MAX_DECODED_BYTES} bytes decoded)"
    if not (isinstance(arrays, list) and 1 <= len(arrays) <= 3):
        return f"the arrays of {path} are {shown(arrays)}, expected one to three [axis, name, slices]"
    for array in arrays:
        named = isinstance(array, list) and len(array) == 3 and isinstance(array[1], str)
        match = ARRAY_NAME.fullmatch(array[1]) if named else None
        if match is None or type(array[0]) is not int or array[0] != int(match["axis"]):
            return f"the array {shown(array)} of {path} is not [axis, shards/KK/KEY_aAXIS.b2nd, slices]"
        if not _is_count(array[2]) or array[2] != shape[array[0]]:
            return f"{array[1]} holds {shown(array[2])} slices, but the shape {shape} of {path} has {shape[array[0]]}"
    if len({array[0] for array in arrays}) != len(arrays):
        return f"the arrays of {path} repeat an axis"
    return None


def _is_normalization(n) -> bool:
    """Whether ``n`` is what ``pack_settings`` records of a ``Normalization``."""

    def pair(v, rule) -> bool:
        return isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)) and rule(*v)

    return (
        isinstance(n, dict)
        and set(n) == {"scheme", "ct_clip", "ct_stats"}
        and n["scheme"] in ("zscore", "ct")
        and (pair(n["ct_clip"], lambda low, high: low < high) or n["ct_clip"] is None and n["scheme"] == "zscore")
        and (n["ct_stats"] is None or pair(n["ct_stats"], lambda mean, std: std > 0))
    )


def _is_number(value) -> bool:
    """A JSON number (an infinite CT window end included; NaN compares with nothing)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_reason(value) -> bool:
    return isinstance(value, str) and value in REASONS


def assemble_index(pack: str, files: list[str], settings: dict) -> dict:
    """The index of a pack whose every file has its record, in the order of ``files``."""
    entries, skipped = [], []
    for path in files:
        record = read_record(pack, path)
        if record is None:
            raise PretrainUserError(f"{pack} has no record of {path}; run the same nnUNetv2_vismae_pack command again.")
        if "reason" in record:
            skipped.append([path, record["reason"], record["detail"]])
        else:
            entries.append([path, record["shape"], record["arrays"]])
    index = {**settings, "num_items": len(files), "files": entries, "skipped": skipped}
    write_json_atomic(os.path.join(pack, INDEX_FILE), index, indent=None)
    return index


def write_pack(
    pack: str, files: list[str], axis: str, normalization: Normalization, num_processes: int, command: str
) -> dict:
    """Pack ``files`` into the folder ``pack`` (created, or continued), locked for ``command``
    meanwhile; the index. A pack of other settings is refused (one sentence)."""
    with claim_output_folder(pack, command, (os.path.join(SHARDS, "[0-9a-f][0-9a-f]"),)):  # record_path's folders
        check_settings(pack, pack_settings(axis, normalization))
        return pack_corpus(pack, files, axis, normalization, num_processes)


def check_settings(pack: str, settings: dict, flags: str = "--axis/--norm flags") -> None:
    """Record what the pack's items are on its first run; refuse a rerun that would make others."""
    path = os.path.join(pack, SETTINGS_FILE)
    if not os.path.isfile(path):
        write_json_atomic(path, settings)
        return
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, ValueError) as e:
        raise PretrainUserError(
            f"{path} cannot be read ({first_line(e)}); it records which slices the pack holds, so pack into a new "
            "-o (or delete this pack folder and pack again)."
        ) from None
    if recorded != settings:
        raise PretrainUserError(
            f"{pack} was packed with other settings ({json.dumps(recorded)}), not "
            f"{json.dumps(settings)}; use the same {flags} or another -o."
        )


def pack_corpus(pack: str, files: list[str], axis: str, normalization: Normalization, num_processes: int) -> dict:
    """Pack every file of ``files`` that has no record yet, in ``num_processes`` worker processes
    (1: in this process), then assemble and return the index. The caller holds the pack's lock
    (``write_pack``)."""
    todo = [f for f in files if read_record(pack, f) is None]  # a corrupt record is packed again
    run_jobs([(f, pack, axis, normalization) for f in todo], len(files), num_processes, pack_file_job)
    return assemble_index(pack, files, pack_settings(axis, normalization))


def run_jobs(jobs: list[tuple], total: int, num_processes: int, job_function) -> None:
    """Run the packing ``jobs`` (the first item of each: its file) with a progress bar over ``total`` files,
    those packed before counted done; a write that failed is raised as the WriteError it is."""
    with tqdm(total=total, initial=total - len(jobs), desc="Packing", unit="file", smoothing=0.05) as bar:
        for _, failure in _results(jobs, num_processes, job_function):
            if failure is not None:
                raise WriteError(*failure)
            bar.update()


def _ignore_interrupt() -> None:
    """Workers leave Ctrl-C to the main process, which stops them (what they finished is kept)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _results(jobs: list[tuple], num_processes: int, job_function=pack_file_job):
    """``job_function`` (``pack_file_job`` or one like it) of every job, in this process or in a pool (in the
    order they finish).

    One job per worker at a time, so that a worker that dies (killed for memory, or crashed in an
    image reader) is known to have been packing one of the files in flight: the pool then fails
    with one sentence naming them, where ``multiprocessing.Pool`` would wait forever."""
    processes = min(num_processes, len(jobs))
    if processes <= 1:
        yield from map(job_function, jobs)
        return
    queued = iter(jobs)
    # spawn, as nnU-Net's preprocessing: the readers' thread pools do not survive a fork
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_ignore_interrupt) as pool:
        in_flight = {pool.submit(job_function, job): job[0] for job in _take(queued, processes)}
        try:
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    del in_flight[future]
                    yield result
                    in_flight.update({pool.submit(job_function, job): job[0] for job in _take(queued, 1)})
        except BrokenProcessPool:  # from a result, or from submitting to the broken pool
            raise PretrainUserError(_died_message(sorted(in_flight.values()))) from None


def _take(jobs, n: int) -> list:
    return [job for _, job in zip(range(n), jobs)]


def _died_message(files: list[str]) -> str:
    named = files[0] if len(files) == 1 else "one of " + ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")
    return (
        f"A packing worker died (killed for want of memory, or crashed in an image reader) while reading {named}; "
        "the files packed so far are kept: rerun the same command, and if it dies again, remove that file from "
        "the input."
    )


# ---------------------------------------------------------------------------------- reading
def read_index(pack: str) -> dict:
    """The checked index of a pack of 2D slices."""
    return checked_index(pack, load_index(pack), index_problem)


def load_index(pack: str) -> dict:
    """The index of a finished pack of this format version, not yet checked entry by entry."""
    path = os.path.join(pack, INDEX_FILE)
    if not os.path.isfile(path):
        raise PretrainUserError(
            f"{pack} is not a finished pack (it has no {INDEX_FILE}); run nnUNetv2_vismae_pack -o {pack} "
            "(again) to write or finish it."
        )
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        raise PretrainUserError(f"{path} cannot be read as a pack index ({e}).") from None
    if not isinstance(index, dict) or index.get("version") != PACK_VERSION:
        raise PretrainUserError(
            f"{path} is not a pack index of format version {PACK_VERSION}; pack the corpus again with this version."
        )
    return index


def checked_index(pack: str, index: dict, problem_of) -> dict:
    """``index``, unless ``problem_of`` finds it is not what the packer writes (one sentence, then)."""
    path = os.path.join(pack, INDEX_FILE)
    problem = problem_of(index)
    if problem is not None:
        raise PretrainUserError(
            f"{path} is not a valid pack index ({problem}); run the nnUNetv2_vismae_pack command that made it "
            "again, which rebuilds the index from the pack's shards."
        )
    return index


def index_problem(index: dict) -> str | None:
    """What is wrong with a pack index of this version (see ``assemble_index``), or None."""
    expected = {"version", "axis", "normalization", "num_items", "files", "skipped"}
    if set(index) != expected:
        return f"its entries are {shown(sorted(index))}, expected {sorted(expected)}"
    if index["axis"] not in AXES:
        return f"axis is {shown(index['axis'])}, expected one of {', '.join(AXES)}"
    if not _is_normalization(index["normalization"]):
        return f"normalization is {shown(index['normalization'])}, expected zscore, or ct with ct_clip [low, high]"
    return listed_entries_problem(index, entry_problem)


def listed_entries_problem(index: dict, file_entry_problem) -> str | None:
    """What is wrong with an index's files (each checked by ``file_entry_problem``), skipped entries and their
    count, the part every kind of pack shares; or None."""
    files, skipped = index["files"], index["skipped"]
    if not isinstance(files, list) or not isinstance(skipped, list):
        return "files and skipped are not lists"
    for entry in files:
        problem = file_entry_problem(entry)
        if problem is not None:
            return problem
    for entry in skipped:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and _is_reason(entry[1])):
            return f"the skipped entry {shown(entry)} is not [path, reason, detail]"
    if index["num_items"] != len(files) + len(skipped) or isinstance(index["num_items"], bool):
        return f"num_items is {shown(index['num_items'])}, expected {len(files) + len(skipped)} (files and skipped)"
    return None


class PackSource:
    """The 2D slices of a pack; ``load_slice(i)`` -> 1 x H x W float32, as ``FileSource`` yields
    them for the same files (slice ``i`` of both is the same when no file was found unusable at
    packing time beyond those the headers show)."""

    num_channels = 1
    open_arrays = 64  # blosc2 arrays kept open per process (each holds a memory map)

    def __init__(self, pack: str):
        index = read_index(pack)
        self.name, self.folder = pack, os.path.abspath(pack)
        self.axis, self.normalization = index["axis"], settings_normalization(index)
        self.files = [path for path, _, _ in index["files"]]
        self.skipped = index["skipped"]
        self.num_items = int(index["num_items"])
        units = [(fi, name, n) for fi, (_, _, arrays) in enumerate(index["files"]) for _, name, n in arrays]
        if not units:
            raise PretrainUserError(f"Pack {pack} holds no usable slices ({len(self.skipped)} files are unusable).")
        self.unit_files = np.array([fi for fi, _, _ in units], dtype=np.int64)
        self.unit_arrays = [name for _, name, _ in units]
        self.offsets = np.concatenate([[0], np.cumsum([n for _, _, n in units])]).astype(np.int64)
        self._arrays: dict[str, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}  # open arrays stay in their process

    def _unit(self, index: int) -> int:
        return int(np.searchsorted(self.offsets, index, side="right") - 1)

    def origin(self, index: int) -> str:
        """The file a flat slice index was packed from (what is counted when it cannot be used)."""
        return self.files[int(self.unit_files[self._unit(index)])]

    def _array(self, name: str):
        """The blosc2 array ``name``, opened once per process (data-loader workers each open their own)."""
        import blosc2

        if self._pid != os.getpid():
            self._arrays, self._pid = {}, os.getpid()
        array = self._arrays.get(name)
        if array is None:
            if len(self._arrays) >= self.open_arrays:
                self._arrays.pop(next(iter(self._arrays)))
            array = blosc2.open(os.path.join(self.folder, name), mode="r", mmap_mode="r", dparams={"nthreads": 1})
            self._arrays[name] = array
        return array

    def load_slice(self, index: int) -> np.ndarray:
        u = self._unit(index)
        return self._array(self.unit_arrays[u])[int(index - self.offsets[u])].astype(np.float32)[None]

    def summary(self) -> dict:
        return image_source_summary(self, "pack")
