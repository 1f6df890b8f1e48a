"""Shared fixtures: the embedded style task written once, a tiny encoder, single-threaded torch.

One torch thread: on a shared 2-core machine two OpenMP threads spin against other processes
and make these tiny steps 20x slower.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_ENCODER

TINY_FLAGS = [
    "--size",
    "32",
    "--embed-dim",
    str(TINY_ENCODER["embed_dim"]),
    "--depths",
    *map(str, TINY_ENCODER["depths"]),
    "--heads",
    *map(str, TINY_ENCODER["num_heads"]),
    "--window",
    str(TINY_ENCODER["window_size"]),
    "--batch-size",
    "16",
]


@pytest.fixture(scope="module", autouse=True)
def single_thread():  # module scope: in place before the module-scoped training fixtures
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def style_task(tmp_path_factory) -> dict:
    """128 training and 32 validation phantoms (32 px NIfTI), as ``example`` writes them."""
    from nnunetv2_vismae.phantoms.classification_task import write_style_task

    return write_style_task(tmp_path_factory.mktemp("style_task"), num_train=128, num_test=32, size=32, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """An encoder checkpoint of the tiny configuration (random weights), as pretraining writes one."""
    from nnunetv2_vismae.architectures import SwinEncoder, SwinEncoderConfig
    from nnunetv2_vismae.checkpoint import save_encoder_checkpoint

    config = SwinEncoderConfig.from_json(TINY_ENCODER)
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("checkpoint") / "encoder.safetensors"
    save_encoder_checkpoint(
        path,
        SwinEncoder.from_config(config).state_dict(),
        {"family": "swin", "encoder_config": config.to_json(), "normalization": {"scheme": "zscore"}},
    )
    return str(path)
