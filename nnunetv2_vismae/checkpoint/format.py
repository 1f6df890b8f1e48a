"""The encoder checkpoint file: write, read, hash, verify.

One safetensors file with the encoder (and stem) tensors, named exactly as in the encoder's
``state_dict()``, and metadata in the safetensors header. Every header value is JSON text:

    format          "nnunetv2_vismae.encoder"
    format_version  1
    family          "swin" (see ``families.py``)
    encoder_config  the family's config (swin: ``SwinEncoderConfig.to_json()``)
    normalization   {"scheme": "zscore"} or {"scheme": "ct", "clip": [lo, hi], "mean": .., "std": ..}
    content_hash    sha256 of the tensors (``tensors_content_hash``)
    ...             optional: source_plans, spacing, data_sources, mask, steps, final_loss, ...

Reading never unpickles anything: safetensors is a JSON header plus raw bytes, and pickle files
(``torch.save``) are recognised and refused.
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
from .families import get_family

FORMAT_NAME = "nnunetv2_vismae.encoder"
FORMAT_VERSION = 1
RESERVED_KEYS = ("format", "format_version", "content_hash")
REQUIRED_KEYS = ("family", "encoder_config", "normalization")
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


def _normalize_hash(value) -> str:
    text = str(value).strip().lower()
    return text.removeprefix("sha256:")


# -------------------------------------------------------------------------------------- writing
def _validate_metadata(metadata: Mapping) -> tuple[dict, dict]:
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"Checkpoint metadata must be a dict, got {type(metadata).__name__}.")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise CheckpointError(f"Checkpoint metadata lacks required entries {missing}; "
                              f"expected at least {list(REQUIRED_KEYS)}.")
    family = get_family(metadata["family"], "The checkpoint metadata")
    try:
        config = family.validated_config(metadata["encoder_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"Checkpoint metadata encoder_config {metadata['encoder_config']!r} "
                              f"is not a valid {family.name} encoder config: {e}.") from None
    norm = metadata["normalization"]
    if not isinstance(norm, Mapping) or not isinstance(norm.get("scheme"), str):
        raise CheckpointError(f"Checkpoint metadata normalization {norm!r} must be a dict with "
                              "a 'scheme' string, e.g. {'scheme': 'zscore'}.")
    return family, config


def _check_tensor_set(family, config: dict, tensors: Mapping[str, torch.Tensor],
                      where: str) -> None:
    if family.expected_shapes is None:
        return
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
            parts.append(f"{len(wrong)} of wrong shape (e.g. {k!r} is {list(got[k])}, "
                         f"expected {list(expected[k])})")
        raise CheckpointError(f"{where} do not match its {family.name} encoder_config "
                              f"{json.dumps(config)}: " + ", ".join(parts) + "; tensor names must "
                              "be exactly the encoder's state_dict() names.")


def save_encoder_checkpoint(path: PathLike, tensors: Mapping[str, torch.Tensor],
                            metadata: Mapping) -> str:
    """Write an encoder checkpoint atomically and return its content hash.

    ``tensors`` are the encoder's ``state_dict()`` (names relative to the encoder). ``metadata``
    must hold ``family``, ``encoder_config`` and ``normalization``; any other JSON-serialisable
    entries are stored too. ``format``, ``format_version`` and ``content_hash`` are filled in
    (given values are replaced). The file is written to a temporary file in the same folder,
    fsynced and renamed over ``path``, so a reader never sees a partial file.
    """
    path = Path(path)
    if not isinstance(tensors, Mapping) or not tensors:
        raise CheckpointError(f"Checkpoint {path} needs a non-empty dict of tensors.")
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"Checkpoint {path}: entry {bad[0]!r} is not a str -> Tensor pair.")
    family, config = _validate_metadata(metadata)
    # private CPU copies: safetensors refuses tensors sharing storage and needs contiguous data
    cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    _check_tensor_set(family, config, cpu, f"The tensors given for checkpoint {path}")

    content_hash = tensors_content_hash(cpu)
    header = {k: v for k, v in metadata.items() if k not in RESERVED_KEYS}
    header.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, encoder_config=config,
                  content_hash=content_hash)
    encoded = {}
    for key, value in header.items():
        if not isinstance(key, str):
            raise CheckpointError(f"Checkpoint metadata key {key!r} must be a string.")
        try:
            encoded[key] = json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"Checkpoint metadata entry {key!r} is not JSON-serialisable "
                                  f"({e}).") from None

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
def _looks_like_pickle(head: bytes) -> bool:
    return head[:4] == b"PK\x03\x04" or (len(head) > 1 and head[0] == 0x80 and head[1] <= 5)


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
            if _looks_like_pickle(head):
                raise CheckpointError(f"{path} is a pickle (torch.save) file, not a safetensors "
                                      "encoder checkpoint; it is refused because unpickling can "
                                      "run arbitrary code.")
            not_st = (f"{path} is not a safetensors file (unreadable header); expected an encoder "
                      "checkpoint written by nnunetv2_vismae.")
            if len(head) < 8:
                raise CheckpointError(not_st if size == 0 else
                                      f"Encoder checkpoint {path} is truncated: it has only "
                                      f"{size} bytes.")
            n = int.from_bytes(head, "little")
            if n < 2 or n > _MAX_HEADER_BYTES:
                raise CheckpointError(not_st)
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"Cannot read encoder checkpoint {path}: {e.strerror or e}.") from None
    if not raw.startswith(b"{"):
        raise CheckpointError(not_st)
    if len(raw) < n:
        raise CheckpointError(f"Encoder checkpoint {path} is truncated: it has {size} bytes, fewer "
                              f"than its {n}-byte header needs.")
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise CheckpointError(not_st) from None
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise CheckpointError(f"Encoder checkpoint {path} is truncated: it has {size} bytes but "
                              f"its header describes {expected}.")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        reason = " ".join(str(e).split())
        raise CheckpointError(f"Encoder checkpoint {path} is not a valid safetensors file "
                              f"({reason}).") from None
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"Encoder checkpoint {path} has a malformed safetensors metadata "
                              "block (expected a JSON object of strings).")
    return tensors, meta


def _decode_metadata(path, raw: Mapping[str, str]) -> dict:
    out = {}
    for key, text in raw.items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            raise CheckpointError(f"Encoder checkpoint {path}: metadata entry {key!r} is not JSON "
                                  f"text ({str(text)[:60]!r}).") from None
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
        raise CheckpointError(f"{path} is a safetensors file but not an nnunetv2_vismae encoder "
                              f"checkpoint (its header has no 'format' entry, expected "
                              f"{FORMAT_NAME!r}).")
    meta = _decode_metadata(path, raw)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected "
                              f"{FORMAT_NAME!r}.")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where} has format_version {version!r}, expected a positive "
                              "integer.")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where} has format_version {version}, newer than the "
                              f"{FORMAT_VERSION} this nnunetv2_vismae reads; upgrade nnunetv2_vismae.")
    missing = [k for k in REQUIRED_KEYS + ("content_hash",) if k not in meta]
    if missing:
        raise CheckpointError(f"{where} lacks metadata entries {missing}.")
    family = get_family(meta["family"], where)
    try:
        config = family.validated_config(meta["encoder_config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has an invalid {family.name} encoder_config "
                              f"{json.dumps(meta['encoder_config'])}: {e}.") from None
    actual = tensors_content_hash(tensors)
    recorded = _normalize_hash(meta["content_hash"])
    if actual != recorded:
        raise CheckpointError(f"{where} is corrupted: its tensors hash to {actual}, but the "
                              f"file records {recorded}.")
    _check_tensor_set(family, config, tensors, f"The tensors of {where}")
    return EncoderCheckpoint(tensors=tensors, metadata=meta, family=family.name,
                             encoder_config=config, content_hash=actual, path=str(path))


def verify_checkpoint(path: PathLike, expected_hash: str) -> EncoderCheckpoint:
    """Read ``path`` and check that its content hash is ``expected_hash`` (as recorded in plans).
    Returns the checkpoint so it need not be read twice; CheckpointError on mismatch."""
    checkpoint = read_encoder_checkpoint(path)
    expected = _normalize_hash(expected_hash)
    if checkpoint.content_hash != expected:
        raise CheckpointError(f"Encoder checkpoint {path} has content hash "
                              f"{checkpoint.content_hash}, but {expected} was expected (the file "
                              "changed since its hash was recorded).")
    return checkpoint
