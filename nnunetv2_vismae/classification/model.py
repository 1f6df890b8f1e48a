"""The classifier: the shared Swin encoder, global average pooling of its last stage, a linear head.

It exposes nnU-Net's ``key_to_encoder`` / ``keys_to_in_proj`` attributes, so the checkpoint
package's ``load_encoder_into`` loads (and adapts) pretrained weights exactly as for SwinUNet.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nnunetv2_vismae.architectures import SwinEncoder, SwinEncoderConfig
from nnunetv2_vismae.checkpoint import (
    CheckpointError,
    load_encoder_into,
    read_encoder_checkpoint,
)
from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.classification.inputs import normalization_from_checkpoint
from nnunetv2_vismae.io.atomic import atomic_path, write_json_atomic

WEIGHTS_FILE, MODEL_FILE = "model.safetensors", "model.json"

# Without --pretrained: a Swin half as wide as VIS-MAE's (about 7M parameters), trainable on a CPU.
SMALL_ENCODER = SwinEncoderConfig(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16), window_size=7)


class SwinClassifier(nn.Module):
    """B x C x H x W -> B x num_classes logits (H, W divisible by the encoder's total stride)."""

    key_to_encoder = "encoder"
    key_to_stem = "encoder.patch_embed"
    keys_to_in_proj = ("encoder.patch_embed.proj",)

    def __init__(self, encoder_config: SwinEncoderConfig, num_classes: int):
        super().__init__()
        self.encoder = SwinEncoder.from_config(encoder_config)
        self.head = nn.Linear(encoder_config.stage_dims[-1], num_classes)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)  # start from near-uniform class probabilities

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x D: the last (normed) stage, averaged over its H/32 x W/32 tokens."""
        return self.encoder(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def read_pretrained(path: str):
    """(checkpoint, encoder config, input normalization) of a swin encoder checkpoint."""
    try:
        checkpoint = read_encoder_checkpoint(path)
    except CheckpointError as e:
        raise ClassificationError(str(e)) from None
    if checkpoint.family != "swin":
        raise ClassificationError(f"{path} holds a {checkpoint.family} encoder; classification uses the swin family.")
    config = SwinEncoderConfig.from_json(checkpoint.encoder_config)
    return checkpoint, config, normalization_from_checkpoint(checkpoint.normalization)


def load_pretrained_encoder(model: SwinClassifier, checkpoint, log=print) -> dict:
    """Load the checkpoint into the encoder, refuse a partial load; the reference to record."""
    try:
        report = load_encoder_into(model, checkpoint, log=log)
    except CheckpointError as e:
        raise ClassificationError(str(e)) from None
    if report.fraction_loaded < 1.0:
        raise ClassificationError(f"{checkpoint.path} filled only {report.num_loaded} of "
                                  f"{report.num_network_tensors} encoder tensors; refusing a partly random encoder.")
    return {"path": str(Path(checkpoint.path).resolve()), "content_hash": checkpoint.content_hash,
            "loaded": report.num_loaded, "adapted": report.adapted}


def save_model_folder(folder: Path, model: SwinClassifier, description: dict) -> None:
    """``model.safetensors`` (the whole classifier) and ``model.json`` (classes, input spec,
    encoder config, ...), each written atomically; the JSON last, so it never names missing weights."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE, fsync=True) as tmp:
        save_file(state, tmp)
    write_json_atomic(folder / MODEL_FILE, description)


def load_model_folder(folder: str) -> tuple[SwinClassifier, dict]:
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ClassificationError(f"{folder} is not a saved classification model; expected {MODEL_FILE} "
                                  f"and {WEIGHTS_FILE} (the 'model' folder that training writes).")
    description = json.loads((folder / MODEL_FILE).read_text())
    model = SwinClassifier(SwinEncoderConfig.from_json(description["encoder_config"]), len(description["classes"]))
    model.load_state_dict(load_file(folder / WEIGHTS_FILE))
    return model.eval(), description
