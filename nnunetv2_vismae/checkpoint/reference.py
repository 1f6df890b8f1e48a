"""How plans name the checkpoint to fine-tune from: the key of the plans' configuration and the
record under it, written by ``nnUNetv2_vismae_plan`` and verified by the trainers before loading."""

from __future__ import annotations

from pathlib import Path

PRETRAINED_KEY = "vismae_pretrained"


def checkpoint_reference(path, checkpoint) -> dict:
    """What the plans record: absolute path, content hash (verified by the trainer) and family."""
    return {"path": str(Path(path).resolve()), "content_hash": checkpoint.content_hash, "family": checkpoint.family}
