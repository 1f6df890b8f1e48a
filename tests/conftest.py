"""Shared fixtures: a tiny nnU-Net dataset of 2D discs and squares, and nnU-Net's folders."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nnunetv2_vismae  # noqa: F401  (installs the warning filter before timm is imported)
from nnunetv2_vismae.io.nnunet import FOLDER_VARIABLES, command_environment, console_script, make_folders


def pytest_configure(config):
    """Under ``pytest -n 2``, one torch thread per worker and per process it starts: two workers' threads would
    otherwise wait for each other on 2 cores (a step up to ten times as long)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


TINY_ENCODER = {
    "patch_size": 4,
    "embed_dim": 12,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 2, 2],
    "window_size": 4,
    "mlp_ratio": 2.0,
    "drop_path_rate": 0.0,
}
# a 3D Swin (swin3d family) small enough for 32^3 volumes on a CPU
TINY_ENCODER_3D = {"embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3], "window_size": [2, 2, 2]}


def save_swin3d_checkpoint(path: Path, encoder: dict = TINY_ENCODER_3D, in_channels: int = 1, seed: int = 0) -> Path:
    """A swin3d encoder checkpoint of a randomly initialised Swin3dEncoder, written by the public API."""
    import torch

    from nnunetv2_vismae.architectures import Swin3dEncoder, Swin3dEncoderConfig
    from nnunetv2_vismae.checkpoint import save_encoder_checkpoint
    from nnunetv2_vismae.checkpoint.families import SWIN3D

    torch.manual_seed(seed)
    model = Swin3dEncoder(Swin3dEncoderConfig.from_json({**encoder, "in_channels": in_channels}))
    metadata = {
        "family": SWIN3D.name,
        "encoder_config": model.config.to_json(),
        "normalization": {"scheme": "zscore"},
        "steps": 1,
    }
    save_encoder_checkpoint(path, model.state_dict(), metadata)
    return Path(path)


def make_case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright disc (label 1) and a dark square (label 2)."""
    yy, xx = np.mgrid[:size, :size]
    label = np.zeros((size, size), np.uint8)
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    r = int(rng.integers(size // 8, size // 5))
    label[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1
    y0, x0 = rng.integers(0, size - size // 4, 2)
    label[y0 : y0 + size // 5, x0 : x0 + size // 5] = 2
    image = 100 + 80 * (label == 1) - 60 * (label == 2) + rng.normal(0, 15, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_raw_dataset(raw_root: Path, dataset_id: int = 990, num_cases: int = 8, size: int = 64) -> Path:
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_Synthetic"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(dataset_id)
    for i in range(num_cases):
        image, label = make_case(rng, size)
        Image.fromarray(image).save(folder / "imagesTr" / f"case_{i:03d}_0000.png")
        Image.fromarray(label).save(folder / "labelsTr" / f"case_{i:03d}.png")
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "gray"},
                "labels": {"background": 0, "disc": 1, "square": 2},
                "numTraining": num_cases,
                "file_ending": ".png",
            }
        )
    )
    return folder


def nnunet_env(root: Path) -> dict:
    """Environment for nnU-Net's commands with its folders under ``root`` and our trainers found."""
    return command_environment(**make_folders(root), nnUNet_compile="f", nnUNet_def_n_proc="1")


def set_nnunet_folders(monkeypatch, env: dict) -> None:
    """nnU-Net's folder variables of ``env`` set in this process, for one test."""
    for name in FOLDER_VARIABLES:
        monkeypatch.setenv(name, env[name])


def run(cmd: list[str], env: dict, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a console script from this environment; unless told not to (``check``), fail the test with its
    output if it fails."""
    result = subprocess.run(
        [console_script(cmd[0]), *cmd[1:]], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert not check or result.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="session")
def preprocessed_dataset(tmp_path_factory) -> dict:
    """Dataset 990 planned and preprocessed by nnU-Net's own command; returns its environment."""
    root = tmp_path_factory.mktemp("nnunet")
    env = nnunet_env(root)
    write_raw_dataset(Path(env["nnUNet_raw"]))
    run(["nnUNetv2_plan_and_preprocess", "-d", "990", "-c", "2d", "-np", "1", "-npfp", "1"], env)
    return env


@pytest.fixture(scope="session")
def cnn_pretraining(preprocessed_dataset, tmp_path_factory) -> Path:
    """``nnUNetv2_vismae_pretrain --encoder cnn -d 990`` in this process, once per session (two steps, a preview
    each step, mask ratio 0.6, visible-patch statistics); returns its output folder, whose checkpoint the tests
    of the run and of fine-tuning it share."""
    from pretrain.cli import main

    out = tmp_path_factory.mktemp("cnn_pretraining") / "run"
    flags = ["--patch-size", "64", "--steps", "2", "--batch-size", "2", "--workers", "0", "--preview-every", "1"]
    flags += ["-device", "cpu", "--mask-ratio", "0.6", "--precision", "fp32", "--cnn-visible-norm"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        set_nnunet_folders(monkeypatch, preprocessed_dataset)
        assert main(["--encoder", "cnn", "-d", "990", "-o", str(out), *flags]) == 0
    return out
