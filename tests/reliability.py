"""Helpers of the CLI-error and untrusted-weight tests: nnU-Net folders, crafted checkpoints, denials."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

TINY_SWIN = {"embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4}


def nnunet_tree(root: Path) -> dict:
    """nnU-Net's folders with Dataset001_Tiny (2d plans, preprocessed cases) and Dataset002_No2d
    (plans with a 3d_fullres configuration only); returns the environment variables."""
    from nnunetv2_vismae.io.nnunet import make_folders
    from tests.pretrain.helpers import write_nnunet_dataset

    env = make_folders(root)
    write_nnunet_dataset(env["nnUNet_preprocessed"])
    no2d = Path(env["nnUNet_preprocessed"]) / "Dataset002_No2d"
    no2d.mkdir()
    (no2d / "nnUNetPlans.json").write_text(
        json.dumps(
            {
                "dataset_name": "Dataset002_No2d",
                "plans_name": "nnUNetPlans",
                "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}},
            }
        )
    )
    return env


@functools.lru_cache(maxsize=None)  # read-only use: one build per configuration
def swin_encoder(in_channels: int = 1, **overrides):
    from nnunetv2_vismae.architectures import SwinUNet

    torch.manual_seed(0)
    return SwinUNet(in_channels, 2, encoder={**TINY_SWIN, **overrides}).encoder


def write_checkpoint(path: Path, encoder, replace: dict | None = None, config: dict | None = None) -> str:
    """An encoder checkpoint with a valid content hash, whose tensors may be replaced (``replace``) or
    whose recorded config may differ from them (``config``): a file someone else wrote."""
    from safetensors.torch import save_file

    from nnunetv2_vismae.checkpoint import FORMAT_NAME, tensors_content_hash

    tensors = {k: v.contiguous() for k, v in {**encoder.state_dict(), **(replace or {})}.items()}
    digest = tensors_content_hash(tensors)
    header = {
        "format": FORMAT_NAME,
        "format_version": 1,
        "family": "swin",
        "encoder_config": config or encoder.config.to_json(),
        "normalization": {"scheme": "zscore"},
        "content_hash": digest,
    }
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in header.items()})
    return digest


# what pydoc.locate reaches from a name that starts with torch.nn.: os.system, called by
# dynamic-network-architectures as dropout_op(**dropout_op_kwargs)
SHELL_THROUGH_TORCH_NN = "torch.nn.modules.module.torch.os.system"


def code_running_cnn_checkpoint(path: Path, marker: Path) -> Path:
    """A real cnn encoder checkpoint (valid content hash) whose architecture block makes nnU-Net's
    network building run ``touch marker``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from nnunetv2_vismae.checkpoint import save_encoder_checkpoint
    from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config
    from tests.pretrain.test_cnn_family import PLAIN

    config = cnn_encoder_config(PLAIN, 1)
    metadata = {"family": "cnn", "encoder_config": config, "normalization": {"scheme": "zscore"}}
    save_encoder_checkpoint(path, build_stock_network(PLAIN, 1).encoder.state_dict(), metadata)
    with safe_open(str(path), "pt") as f:
        header = {k: json.loads(v) for k, v in f.metadata().items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    kwargs = header["encoder_config"]["architecture"]["arch_kwargs"]
    kwargs["dropout_op"], kwargs["dropout_op_kwargs"] = SHELL_THROUGH_TORCH_NN, {"command": f"touch {marker}"}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in header.items()})
    return path


def plans_reference(path: Path) -> dict:
    """The reference to checkpoint ``path`` that nnUNetv2_vismae_plan records in the plans."""
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
    from nnunetv2_vismae.checkpoint.reference import checkpoint_reference

    return checkpoint_reference(path, read_encoder_checkpoint(path))


def three_d_checkpoint(path: Path) -> str:
    """A checkpoint whose stem is a 3D convolution (5D weight) under a 2D encoder config."""
    encoder = swin_encoder()
    weight = encoder.state_dict()["patch_embed.proj.weight"]
    return write_checkpoint(path, encoder, {"patch_embed.proj.weight": weight[..., None].repeat(1, 1, 1, 1, 4)})


def three_channel_checkpoint(path: Path) -> str:
    """A checkpoint whose tensors take 3 input channels while its config says 1."""
    return write_checkpoint(path, swin_encoder(3), config=swin_encoder(1).config.to_json())


class CreatesFile:
    """Unpickling this object opens (creates) ``path``: the code execution a weights file must not get."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_pickle(path: Path, marker: Path) -> Path:
    """A torch.save file that looks like weights and creates ``marker`` if it is ever unpickled."""
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(12, 1, 4, 4)}, "payload": CreatesFile(marker)}, path)
    return path


def deny_write(folder: Path, monkeypatch) -> Path:
    """Make ``folder`` unwritable: chmod 555, and as root (who writes anyway) deny it in os.access."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        denied = str(folder.absolute())
        monkeypatch.setattr(
            os,
            "access",
            lambda p, mode, *a, **k: (
                False if str(Path(p).absolute()) == denied and mode & os.W_OK else real(p, mode, *a, **k)
            ),
        )
    return folder


class LockHolder:
    """Another process that holds the output-folder lock of ``folder`` (as a pretraining run would)
    until it is killed."""

    SCRIPT = (
        "import sys; from nnunetv2_vismae.io.lock import claim_output_folder; "
        "claim_output_folder(sys.argv[1], 'nnUNetv2_vismae_pretrain'); print('locked', flush=True); "
        "sys.stdin.read()"
    )

    def __init__(self, folder):
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout.readline().strip() == "locked"
        self.pid = self.process.pid

    def kill(self):
        """SIGKILL: the holder cannot release anything."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.process.stdin.close()
        self.process.stdout.close()
