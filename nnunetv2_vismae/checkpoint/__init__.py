"""The encoder checkpoint format: write, read, hash, verify, inspect and load (with adaptation).

from nnunetv2_vismae.checkpoint import (CheckpointError, save_encoder_checkpoint,
    read_encoder_checkpoint, checkpoint_content_hash, verify_checkpoint, load_encoder_into)
from nnunetv2_vismae.checkpoint.families import SWIN

h = save_encoder_checkpoint("enc.safetensors", encoder.state_dict(),
                            {"family": SWIN.name, "encoder_config": encoder.config.to_json(),
                             "normalization": {"scheme": "zscore"}, "steps": 1000})
ckpt = verify_checkpoint("enc.safetensors", h)      # or read_encoder_checkpoint(path)
report = load_encoder_into(network, ckpt)          # network.key_to_encoder == "encoder"
"""

from .errors import CheckpointError
from .families import EncoderFamily, FAMILIES, get_family, register_family
from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    EncoderCheckpoint,
    checkpoint_content_hash,
    read_encoder_checkpoint,
    save_encoder_checkpoint,
    tensors_content_hash,
    verify_checkpoint,
)
from .loader import LoadReport, load_encoder_into

__all__ = [
    "CheckpointError",
    "EncoderCheckpoint",
    "EncoderFamily",
    "FAMILIES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LoadReport",
    "checkpoint_content_hash",
    "get_family",
    "load_encoder_into",
    "read_encoder_checkpoint",
    "register_family",
    "save_encoder_checkpoint",
    "tensors_content_hash",
    "verify_checkpoint",
]
