"""Small Swin encoders and checkpoints for the checkpoint tests (CPU, a few MB, fast)."""

import warnings

import pytest
import torch
from torch import nn

warnings.filterwarnings("ignore", message=".*torch.jit.interface.*", category=FutureWarning)

from nnunetv2_vismae.architectures.swin_encoder import SwinEncoder  # noqa: E402
from nnunetv2_vismae.checkpoint import save_encoder_checkpoint  # noqa: E402

SMALL = dict(
    in_channels=1,
    patch_size=4,
    embed_dim=24,
    depths=(1, 1, 1, 1),
    num_heads=(1, 2, 3, 4),
    window_size=7,
    mlp_ratio=2.0,
    drop_path_rate=0.0,
)


class EncoderHolder(nn.Module):
    """Stand-in for SwinUNet: only the attributes the loader relies on."""

    key_to_encoder = "encoder"
    key_to_stem = "encoder.patch_embed"
    keys_to_in_proj = ("encoder.patch_embed.proj",)

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder


@pytest.fixture
def make_encoder():
    """make_encoder(seed=0, **overrides) -> SwinEncoder in eval mode (small config)."""

    def make(seed: int = 0, **overrides) -> SwinEncoder:
        torch.manual_seed(seed)
        return SwinEncoder(**{**SMALL, **overrides}).eval()

    return make


@pytest.fixture
def make_network(make_encoder):
    """make_network(seed=1, **overrides) -> module holding a SwinEncoder under 'encoder'."""

    def make(seed: int = 1, **overrides) -> EncoderHolder:
        return EncoderHolder(make_encoder(seed, **overrides)).eval()

    return make


@pytest.fixture
def base_metadata():
    def make(encoder: SwinEncoder, **extra) -> dict:
        return {
            "family": "swin",
            "encoder_config": encoder.config.to_json(),
            "normalization": {"scheme": "zscore"},
            **extra,
        }

    return make


@pytest.fixture
def saved(tmp_path, make_encoder, base_metadata):
    """(path, encoder, content_hash) of a small swin checkpoint written by the public API."""
    encoder = make_encoder(0)
    path = tmp_path / "encoder.safetensors"
    content_hash = save_encoder_checkpoint(path, encoder.state_dict(), base_metadata(encoder))
    return path, encoder, content_hash
