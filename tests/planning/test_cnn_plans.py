"""``nnUNetv2_vismae_plan --pretrained CNN_CHECKPOINT``: nnU-Net's own network plus the checkpoint reference."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from nnunetv2_vismae.checkpoint import read_encoder_checkpoint, save_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config
from nnunetv2_vismae.planning import cli
from nnunetv2_vismae.planning.vismae_plans import PRETRAINED_KEY

pytestmark = pytest.mark.slow  # nnUNetv2_plan_and_preprocess runs first (the preprocessed_dataset fixture)


@pytest.fixture
def dataset(monkeypatch, preprocessed_dataset) -> Path:
    monkeypatch.setenv("nnUNet_preprocessed", preprocessed_dataset["nnUNet_preprocessed"])
    return Path(preprocessed_dataset["nnUNet_preprocessed"]) / "Dataset990_Synthetic"


def cnn_checkpoint(folder: Path, architecture: dict) -> tuple[Path, str]:
    torch.manual_seed(0)
    path = folder / "cnn.safetensors"
    digest = save_encoder_checkpoint(
        path,
        build_stock_network(architecture, 1).encoder.state_dict(),
        {"family": "cnn", "encoder_config": cnn_encoder_config(architecture, 1), "normalization": {"scheme": "zscore"}},
    )
    return path, digest


def test_cnn_checkpoint_gets_nnunets_own_architecture(dataset, tmp_path, capsys):
    plans = json.loads((dataset / "nnUNetPlans.json").read_text())
    path, digest = cnn_checkpoint(tmp_path, plans["configurations"]["2d"]["architecture"])
    assert cli.main(["-d", "990", "--pretrained", str(path)]) == 0
    assert "-p nnUNetMAEPlans -tr nnUNetTrainerMAE" in capsys.readouterr().out
    derived = json.loads((dataset / "nnUNetMAEPlans.json").read_text())
    config, source = derived["configurations"]["2d"], plans["configurations"]["2d"]
    assert derived["plans_name"] == "nnUNetMAEPlans" and list(derived["configurations"]) == ["2d"]
    assert config["architecture"] == source["architecture"] and config["data_identifier"] == source["data_identifier"]
    metadata_hash = read_encoder_checkpoint(path).metadata_hash
    assert config[PRETRAINED_KEY] == {
        "path": str(path.resolve()),
        "content_hash": digest,
        "metadata_hash": metadata_hash,
        "family": "cnn",
    }


def test_checkpoint_from_other_plans_is_refused_with_one_sentence(dataset, tmp_path, capsys):
    plans = json.loads((dataset / "nnUNetPlans.json").read_text())
    path, _ = cnn_checkpoint(tmp_path, plans["configurations"]["2d"]["architecture"])
    other = copy.deepcopy(plans)
    other["configurations"]["2d"]["architecture"]["arch_kwargs"]["kernel_sizes"][1] = [5, 5]
    (dataset / "nnUNetPlansKernel5.json").write_text(json.dumps(other))
    code = cli.main(["-d", "990", "-p", "nnUNetPlansKernel5", "--pretrained", str(path), "-o", "nnUNetMAEPlansKernel5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert (
        f"Encoder checkpoint {path} was pretrained for a different network than the 2d configuration of plans "
        "nnUNetPlansKernel5: its kernel_sizes is"
    ) in err
    assert not (dataset / "nnUNetMAEPlansKernel5.json").exists()
