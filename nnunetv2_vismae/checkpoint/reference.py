"""How plans name the checkpoint to fine-tune from: the key of the plans' configuration and the
record under it, written by ``nnUNetv2_vismae_plan`` and verified by the trainers before loading."""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError
from .format import EncoderCheckpoint, verify_checkpoint

PRETRAINED_KEY = "vismae_pretrained"


def checkpoint_reference(path, checkpoint) -> dict:
    """What the plans record: absolute path, the hashes of tensors and metadata (verified by the
    trainer) and family."""
    return {
        "path": str(Path(path).resolve()),
        "content_hash": checkpoint.content_hash,
        "metadata_hash": checkpoint.metadata_hash,
        "family": checkpoint.family,
    }


def verify_reference(reference: dict) -> EncoderCheckpoint:
    """The checkpoint the plans' ``reference`` names, once its tensors and metadata hash as recorded."""
    if "metadata_hash" not in reference:  # plans written before the metadata was hashed
        raise CheckpointError(
            f"The plans record no metadata hash for encoder checkpoint {reference.get('path')}, so a changed "
            "architecture or normalization in it would go unnoticed; run nnUNetv2_vismae_plan again."
        )
    return verify_checkpoint(reference["path"], reference["content_hash"], reference["metadata_hash"])
