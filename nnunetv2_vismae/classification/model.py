"""The classifier: the shared Swin encoder, global average pooling of its last stage, a linear head.

It exposes nnU-Net's ``key_to_encoder`` / ``keys_to_in_proj`` attributes, so the checkpoint
package's ``load_encoder_into`` loads (and adapts) pretrained weights exactly as for SwinUNet.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nnunetv2_vismae.architectures import SwinEncoder, SwinEncoderConfig
from nnunetv2_vismae.checkpoint import load_encoder_into, read_encoder_checkpoint
from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.classification.inputs import InputSpec, normalization_from_checkpoint
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


# classification's family registry: the classifier built around an encoder of each family
CLASSIFIERS: dict[str, type[nn.Module]] = {"swin": SwinClassifier}


def read_pretrained(path: str):
    """(checkpoint, encoder config, input normalization) of an encoder checkpoint of a family in CLASSIFIERS."""
    checkpoint = read_encoder_checkpoint(path)
    if checkpoint.family not in CLASSIFIERS:
        raise ClassificationError(
            f"{path} holds a {checkpoint.family} encoder; classification builds on {', '.join(CLASSIFIERS)} encoders."
        )
    config = SwinEncoderConfig.from_json(checkpoint.encoder_config)
    return checkpoint, config, normalization_from_checkpoint(checkpoint.normalization)


def load_pretrained_encoder(model: SwinClassifier, checkpoint, log=print) -> dict:
    """Load the checkpoint into the encoder (a partial load is refused there); the reference to record."""
    report = load_encoder_into(model, checkpoint, log=log)
    return {
        "path": str(Path(checkpoint.path).resolve()),
        "content_hash": checkpoint.content_hash,
        "loaded": report.num_loaded,
        "adapted": report.adapted,
    }


def save_model_folder(folder: Path, model: SwinClassifier, description: dict) -> None:
    """``model.safetensors`` (the whole classifier) and ``model.json`` (classes, input spec,
    encoder config, ...), each written atomically; the JSON last, so it never names missing weights."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE, fsync=True) as tmp:
        save_file(state, tmp)
    write_json_atomic(folder / MODEL_FILE, description)


def _parsed_entry(path: Path, description: dict, key: str, parse):
    try:
        return parse(description[key])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise ClassificationError(f"{path}: {key!r} is not a valid entry ({type(e).__name__}: {e}).") from None


def read_model_description(path: Path) -> tuple[dict, SwinEncoderConfig]:
    """``model.json`` and the encoder config it names, checked for everything predict uses;
    ClassificationError naming the file otherwise."""
    expected = f"expected the {MODEL_FILE} that training writes"
    try:
        description = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ClassificationError(f"{path} cannot be read as JSON ({str(e).splitlines()[0]}); {expected}.") from None
    if not isinstance(description, dict):
        raise ClassificationError(f"{path} holds a JSON {type(description).__name__}, not an object; {expected}.")
    missing = [k for k in ("classes", "input", "encoder_config") if k not in description]
    if missing:
        raise ClassificationError(f"{path} has no {missing[0]!r} entry; {expected}.")
    classes = description["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ClassificationError(f"{path}: 'classes' must be a list of at least two class names, got {classes!r}.")
    _parsed_entry(path, description, "input", InputSpec.from_json)
    return description, _parsed_entry(path, description, "encoder_config", SwinEncoderConfig.from_json)


def load_model_folder(folder: str) -> tuple[SwinClassifier, dict]:
    """The classifier saved in ``folder`` (in eval mode) and its description; ClassificationError
    (one sentence naming the file) for a missing, truncated or mismatching file."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ClassificationError(
            f"{folder} is not a saved classification model; expected {MODEL_FILE} "
            f"and {WEIGHTS_FILE} (the 'model' folder that training writes)."
        )
    description, config = read_model_description(folder / MODEL_FILE)
    weights = folder / WEIGHTS_FILE
    try:
        state = load_file(weights)
    except (OSError, SafetensorError) as e:
        raise ClassificationError(
            f"{weights} cannot be read: it is truncated or not a safetensors file ({e})."
        ) from None
    model = SwinClassifier(config, len(description["classes"]))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ClassificationError(
            f"{weights} does not hold the model that {folder / MODEL_FILE} describes (other tensor names or shapes)."
        ) from None
    return model.eval(), description
