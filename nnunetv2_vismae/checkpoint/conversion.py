"""What every conversion of ``nnUNetv2_vismae_convert`` shares (``convert`` for Swin layouts, ``nnssl``):
the source's hash, and writing a checkpoint only once the network it names loads all of it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CONVERTER = "nnUNetv2_vismae_convert"


@dataclass
class ConversionResult:
    path: str
    content_hash: str
    encoder_config: dict
    metadata: dict
    report: object  # LoadReport of the built-in verification


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_complete_load(report, network: str):
    """CheckpointError unless every encoder tensor of the ``network`` built from the checkpoint's config
    was loaded as is (no adaptation, nothing missing or extra)."""
    from .errors import CheckpointError

    if report.fraction_loaded != 1.0 or report.adapted or report.missing or report.unexpected:
        raise CheckpointError(
            f"Verification failed: the converted weights loaded {report.num_loaded}/"
            f"{report.num_network_tensors} encoder tensors of a {network} built from their config "
            f"({report.num_adapted} adapted, {report.num_missing} missing, "
            f"{report.num_unexpected} unexpected), expected all of them as is; nothing was written."
        )
    return report


def write_verified(dst: Path, tensors: dict, metadata: dict, log: Callable, verify: Callable) -> ConversionResult:
    """Write the checkpoint beside ``dst``, read it back and ``verify`` it (the network its config names
    loads all of it); only then does it replace ``dst``."""
    from nnunetv2_vismae.io.atomic import atomic_path

    from .errors import CheckpointError
    from .format import read_encoder_checkpoint, save_encoder_checkpoint

    with atomic_path(dst) as tmp:
        try:
            content_hash = save_encoder_checkpoint(tmp, tensors, metadata)
        except CheckpointError as e:  # name the file the user asked for, not the temporary beside it
            raise CheckpointError(str(e).replace(tmp, str(dst))) from None
        checkpoint = read_encoder_checkpoint(tmp)
        checkpoint.path = str(dst)
        report = verify(checkpoint, log)
    log(f"Wrote {dst} (content hash {content_hash}).")
    return ConversionResult(str(dst), content_hash, metadata["encoder_config"], checkpoint.metadata, report)
