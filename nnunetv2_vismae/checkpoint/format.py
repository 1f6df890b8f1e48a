"""The encoder checkpoint file: write, read, hash, verify.

One safetensors file with the encoder (and stem) tensors, named exactly as in the encoder's
``state_dict()``, and metadata in the safetensors header. Every header value is JSON text:

    format          "nnunetv2_vismae.encoder"
    format_version  1
    family          the name of a family registered in ``families.py``
    encoder_config  the family's config (swin: ``SwinEncoderConfig.to_json()``)
    normalization   {"scheme": "zscore"}, {"scheme": "ct", "ct_clip": [lo, hi], "ct_stats": [mean, std]},
                    ... (``schema.NORMALIZATION_SCHEMES``), optionally with "per_source": [one per source]
    content_hash    sha256 of the tensors (``tensors_content_hash``)
    spatial_dims    3 for a 3D encoder; absent for a 2D one (absent means 2, so 2D files predating it
                    stay valid and byte-identical), always the dimensions of the family's config
    ...             optional: source_plans, spacing, data_sources, mask, steps, final_loss, ...

The content hash covers the tensors only; ``metadata_hash`` (computed, not stored) covers every
other entry, so plans that record both refuse a file whose tensors or metadata changed since.
``family``, ``encoder_config``, ``normalization`` and ``spatial_dims`` follow a schema (types and bounds of every
entry, ``schema.py`` and the family's rules), checked on writing and reading before anything is
built from them; the optional entries are free-form JSON. Reading never unpickles anything:
safetensors is a JSON header plus raw bytes, and pickle files (``torch.save``) are recognised and
refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from nnunetv2_vismae.io.atomic import atomic_path

from .errors import CheckpointError
from .families import ConfigProblems, get_family
from .schema import SPATIAL_DIMS, normalization_problems, shown

FORMAT_NAME = "nnunetv2_vismae.encoder"
FORMAT_VERSION = 1
RESERVED_KEYS = ("format", "format_version", "content_hash")
REQUIRED_KEYS = ("family", "encoder_config", "normalization")
SPATIAL_DIMS_KEY = "spatial_dims"
DEFAULT_SPATIAL_DIMS = 2  # what a file without the entry holds: every file written before 3D existed
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

PathLike = Union[str, os.PathLike]


@dataclass
class EncoderCheckpoint:
    """A checkpoint in memory: tensors (CPU), decoded metadata and the verified content hash."""

    tensors: dict[str, torch.Tensor]
    metadata: dict
    family: str
    encoder_config: dict
    content_hash: str
    path: Optional[str] = field(default=None)

    @property
    def format_version(self) -> int:
        return self.metadata["format_version"]

    @property
    def normalization(self) -> dict:
        return self.metadata["normalization"]

    @property
    def spatial_dims(self) -> int:
        """2 or 3, checked against the encoder config when the file was read."""
        return self.metadata.get(SPATIAL_DIMS_KEY, DEFAULT_SPATIAL_DIMS)

    @property
    def metadata_hash(self) -> str:
        return metadata_hash(self.metadata)


# -------------------------------------------------------------------------------------- hashing
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensors_content_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex digest over the tensors in sorted name order. For each tensor the digest takes
    the UTF-8 JSON line ``["<name>", "<dtype>", [shape...]]\\n`` (dtype as torch names it without
    ``torch.``, e.g. ``float32``) followed by its raw little-endian C-order bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        line = json.dumps([name, _dtype_name(t.dtype), list(t.shape)]) + "\n"
        digest.update(line.encode("utf-8"))
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def metadata_hash(metadata: Mapping) -> str:
    """sha256 hex digest of the decoded metadata but ``content_hash``, as JSON with sorted keys and
    no spaces: it changes with any entry (the architecture, the normalization, ...)."""
    entries = {k: v for k, v in metadata.items() if k != "content_hash"}
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _normalize_hash(value) -> str:
    text = str(value).strip().lower()
    return text.removeprefix("sha256:")


# ------------------------------------------------------------------------------------- schema
def _spatial_dims_problems(metadata: Mapping, family, config: Optional[dict], absent: Optional[int]) -> list[str]:
    """The ``spatial_dims`` entry must be 2 or 3 and the dimensions of the family's (checked) config;
    ``absent`` is what a missing entry stands for (None: whatever the config's are)."""
    value = metadata.get(SPATIAL_DIMS_KEY, absent)
    if value is not None and not SPATIAL_DIMS.accepts(value):
        return [f"{SPATIAL_DIMS_KEY} is {shown(value)}, expected {SPATIAL_DIMS.expected}."]
    if config is None or value in (None, family.spatial_dims(config)):
        return []
    stated = f"is {value}" if SPATIAL_DIMS_KEY in metadata else f"is absent (meaning {value})"
    return [
        f"{SPATIAL_DIMS_KEY} {stated}, but its {family.name} encoder_config describes a "
        f"{family.spatial_dims(config)}D encoder."
    ]


def _validated_metadata(metadata: Mapping, where: str, absent_dims: Optional[int] = DEFAULT_SPATIAL_DIMS) -> tuple:
    """(family, canonical encoder config) of decoded metadata holding ``REQUIRED_KEYS``, after the
    schema check of family, encoder_config, normalization and spatial_dims (a missing one stands for
    ``absent_dims``); CheckpointError with one sentence per violation otherwise. Nothing is built
    before this returns."""
    family = get_family(metadata["family"], where)
    config, problems = None, []
    try:
        config = family.validated_config(metadata["encoder_config"])
    except ConfigProblems as e:
        problems = e.problems
    problems += _spatial_dims_problems(metadata, family, config, absent_dims)
    problems += normalization_problems(metadata["normalization"])
    if problems:
        raise CheckpointError(f"{where} has invalid metadata: " + " ".join(problems))
    return family, config


# -------------------------------------------------------------------------------------- writing
def _encoded_header(header: Mapping) -> dict[str, str]:
    encoded = {}
    for key, value in header.items():
        if not isinstance(key, str):
            raise CheckpointError(f"Checkpoint metadata key {key!r} must be a string.")
        try:
            encoded[key] = json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"Checkpoint metadata entry {key!r} is not JSON-serialisable ({e}).") from None
    return encoded


def check_tensor_set(family, config: dict, tensors: Mapping[str, torch.Tensor], where: str) -> Optional[list[str]]:
    """The encoder's state_dict names in its own order, once the tensors match them in names and
    shapes (CheckpointError otherwise); None when the family does not know its tensor set."""
    if family.expected_shapes is None:
        return None
    expected = family.expected_shapes(config)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]!r})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of wrong shape (e.g. {k!r} is {list(got[k])}, expected {list(expected[k])})")
        raise CheckpointError(
            f"{where} do not match its {family.name} encoder_config "
            f"{json.dumps(config)}: " + ", ".join(parts) + "; tensor names must "
            "be exactly the encoder's state_dict() names."
        )
    return list(expected)


def save_encoder_checkpoint(path: PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping) -> str:
    """Write an encoder checkpoint atomically and return its content hash.

    ``tensors`` are the encoder's ``state_dict()`` (names relative to the encoder). ``metadata``
    must hold ``family``, ``encoder_config`` and ``normalization``; ``spatial_dims``, when given, must
    be the config's (it is filled in for a 3D encoder); any other JSON-serialisable entries are
    stored too. ``format``, ``format_version`` and ``content_hash`` are filled in
    (given values are replaced). The file is written to a temporary file in the same folder,
    fsynced and renamed over ``path``, so a reader never sees a partial file.
    """
    path = Path(path)
    if not isinstance(tensors, Mapping) or not tensors:
        raise CheckpointError(f"Checkpoint {path} needs a non-empty dict of tensors.")
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"Checkpoint {path}: entry {bad[0]!r} is not a str -> Tensor pair.")
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"Checkpoint metadata must be a dict, got {type(metadata).__name__}.")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise CheckpointError(
            f"Checkpoint metadata lacks required entries {missing}; expected at least {list(REQUIRED_KEYS)}."
        )
    header = {k: v for k, v in metadata.items() if k not in RESERVED_KEYS}
    encoded = _encoded_header(header)
    # checked as a reader will see it (JSON: tuples are lists); a missing spatial_dims is the config's
    checked = {k: json.loads(encoded[k]) for k in (*REQUIRED_KEYS, SPATIAL_DIMS_KEY) if k in encoded}
    family, config = _validated_metadata(checked, f"Checkpoint {path}", absent_dims=None)
    # written only for 3D, so that 2D files stay byte-identical to those written before it existed
    encoded.pop(SPATIAL_DIMS_KEY, None)
    if family.spatial_dims(config) != DEFAULT_SPATIAL_DIMS:
        encoded[SPATIAL_DIMS_KEY] = json.dumps(family.spatial_dims(config))
    # private CPU copies: safetensors refuses tensors sharing storage and needs contiguous data
    cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    check_tensor_set(family, config, cpu, f"The tensors given for checkpoint {path}")

    content_hash = tensors_content_hash(cpu)
    encoded.update(
        _encoded_header(
            dict(format=FORMAT_NAME, format_version=FORMAT_VERSION, encoder_config=config, content_hash=content_hash)
        )
    )

    from safetensors.torch import save_file

    try:
        with atomic_path(path, fsync=True) as tmp:
            save_file(cpu, tmp, metadata=encoded)
    except OSError as e:
        raise CheckpointError(f"Cannot write checkpoint {path}: {e.strerror or e}.") from None
    _fsync_dir(path.parent)
    return content_hash


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported on every platform / file system
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------------- reading
def looks_like_pickle(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a pickle: a ``torch.save`` zip or a raw pickle."""
    return head[:4] == b"PK\x03\x04" or (len(head) > 1 and head[0] == 0x80 and head[1] <= 5)


def kind_of_content(head: bytes) -> str:
    """What a file that is not a pickle holds, from its first bytes (a few hundred): "empty",
    "plain text" or "binary data"."""
    if not head:
        return "empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut off at the end of ``head``
            return "binary data"
        text = head[: e.start].decode("utf-8")
    return "plain text" if all(c.isprintable() or c in "\t\r\n" for c in text) else "binary data"


def _read_safetensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and raw (string) header metadata of a safetensors file, with clear errors for a
    missing, truncated, pickled or otherwise unreadable file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Encoder checkpoint {path} does not exist.")
    if not path.is_file():
        raise CheckpointError(f"Encoder checkpoint {path} is not a file, expected a .safetensors file.")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if looks_like_pickle(head):
                raise CheckpointError(
                    f"{path} is a pickle (torch.save) file, not a safetensors "
                    "encoder checkpoint; it is refused because unpickling can "
                    "run arbitrary code."
                )
            not_st = (
                f"{path} is not a safetensors file (unreadable header); expected an encoder "
                "checkpoint written by nnunetv2_vismae."
            )
            if len(head) < 8:
                raise CheckpointError(
                    not_st if size == 0 else f"Encoder checkpoint {path} is truncated: it has only {size} bytes."
                )
            n = int.from_bytes(head, "little")
            if n < 2 or n > _MAX_HEADER_BYTES:
                raise CheckpointError(not_st)
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"Cannot read encoder checkpoint {path}: {e.strerror or e}.") from None
    if not raw.startswith(b"{"):
        raise CheckpointError(not_st)
    if len(raw) < n:
        raise CheckpointError(
            f"Encoder checkpoint {path} is truncated: it has {size} bytes, fewer than its {n}-byte header needs."
        )
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        raise CheckpointError(not_st) from None
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise CheckpointError(
            f"Encoder checkpoint {path} is truncated: it has {size} bytes but its header describes {expected}."
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        reason = " ".join(str(e).split())
        raise CheckpointError(f"Encoder checkpoint {path} is not a valid safetensors file ({reason}).") from None
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"Encoder checkpoint {path} has a malformed safetensors metadata block (expected a JSON object of strings)."
        )
    return tensors, meta


def _decode_metadata(path, raw: Mapping[str, str]) -> dict:
    out = {}
    for key, text in raw.items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError, RecursionError):  # RecursionError: nested thousands deep
            raise CheckpointError(
                f"Encoder checkpoint {path}: metadata entry {key!r} is not JSON text ({str(text)[:60]!r})."
            ) from None
    return out


def checkpoint_content_hash(path: PathLike) -> str:
    """Recompute the content hash of the tensors stored in ``path`` (ignores the recorded one)."""
    tensors, _ = _read_safetensors(path)
    return tensors_content_hash(tensors)


def read_encoder_checkpoint(path: PathLike) -> EncoderCheckpoint:
    """Read and validate an encoder checkpoint (format, version, family, config, tensor set and
    content hash). Raises CheckpointError with one sentence on any problem."""
    tensors, raw = _read_safetensors(path)
    where = f"Encoder checkpoint {path}"
    if raw.get("format") is None:
        raise CheckpointError(
            f"{path} is a safetensors file but not an nnunetv2_vismae encoder "
            f"checkpoint (its header has no 'format' entry, expected "
            f"{FORMAT_NAME!r})."
        )
    meta = _decode_metadata(path, raw)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT_NAME!r}.")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where} has format_version {version!r}, expected a positive integer.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format_version {version}, newer than the "
            f"{FORMAT_VERSION} this nnunetv2_vismae reads; upgrade nnunetv2_vismae."
        )
    missing = [k for k in REQUIRED_KEYS + ("content_hash",) if k not in meta]
    if missing:
        raise CheckpointError(f"{where} lacks metadata entries {missing}.")
    family, config = _validated_metadata(meta, where)
    actual = tensors_content_hash(tensors)
    recorded = _normalize_hash(meta["content_hash"])
    if actual != recorded:
        raise CheckpointError(
            f"{where} is corrupted: its tensors hash to {actual}, but the file records {shown(recorded)}."
        )
    try:
        order = check_tensor_set(family, config, tensors, f"The tensors of {where}")
    except ValueError as e:  # a config the schema passed but the family cannot build
        raise CheckpointError(f"{where} has invalid metadata: {e}") from None
    tensors = {name: tensors[name] for name in order or sorted(tensors)}
    return EncoderCheckpoint(
        tensors=tensors, metadata=meta, family=family.name, encoder_config=config, content_hash=actual, path=str(path)
    )


def verify_checkpoint(
    path: PathLike, expected_hash: str, expected_metadata_hash: str | None = None
) -> EncoderCheckpoint:
    """Read ``path`` and check that its content hash is ``expected_hash`` and, when given, its
    metadata hash ``expected_metadata_hash`` (as recorded in plans). Returns the checkpoint so it need
    not be read twice; CheckpointError on mismatch."""
    checkpoint = read_encoder_checkpoint(path)
    expected = _normalize_hash(expected_hash)
    if checkpoint.content_hash != expected:
        raise CheckpointError(
            f"Encoder checkpoint {path} has content hash "
            f"{checkpoint.content_hash}, but {expected} was expected (the file "
            "changed since its hash was recorded)."
        )
    expected = None if expected_metadata_hash is None else _normalize_hash(expected_metadata_hash)
    if expected not in (None, checkpoint.metadata_hash):
        raise CheckpointError(
            f"Encoder checkpoint {path} has metadata hash {checkpoint.metadata_hash}, but {expected} was "
            "expected (its metadata changed since its hash was recorded)."
        )
    return checkpoint
