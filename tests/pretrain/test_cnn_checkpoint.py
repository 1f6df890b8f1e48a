"""``nnUNetv2_vismae_pretrain --encoder cnn``: the checkpoint fits nnU-Net's stock network, stem included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnunetv2_vismae.checkpoint import load_encoder_into, read_encoder_checkpoint, save_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network, cnn_encoder_config, encoder_and_stem_as_encoder
from pretrain.cli import main
from tests.conftest import set_nnunet_folders

from .test_cnn_family import residual_architecture


def _env(monkeypatch, preprocessed_dataset):
    set_nnunet_folders(monkeypatch, preprocessed_dataset)
    plans = Path(preprocessed_dataset["nnUNet_preprocessed"]) / "Dataset990_Synthetic" / "nnUNetPlans.json"
    return json.loads(plans.read_text())


@pytest.mark.slow  # the preprocessed_dataset fixture runs nnUNetv2_plan_and_preprocess
def test_pretrained_checkpoint_loads_fully_into_the_stock_network(monkeypatch, preprocessed_dataset, cnn_pretraining):
    plans = _env(monkeypatch, preprocessed_dataset)
    out = cnn_pretraining  # --encoder cnn -d 990 --mask-ratio 0.6 --cnn-visible-norm, a preview each step
    checkpoint = read_encoder_checkpoint(out / "encoder.safetensors")
    assert checkpoint.metadata["mask"]["norm_statistics"] == "visible"  # and still nnU-Net's tensors, below
    architecture = plans["configurations"]["2d"]["architecture"]
    assert checkpoint.family == "cnn" and checkpoint.encoder_config["architecture"] == architecture
    assert checkpoint.encoder_config["key_to_encoder"] == "encoder.stages"
    assert checkpoint.metadata["mask"]["ratio"] == 0.6 and (out / "previews" / "step_0000001.png").is_file()

    network = build_stock_network(architecture, 1, num_classes=3, deep_supervision=True)  # as nnUNetTrainer does
    with encoder_and_stem_as_encoder(network):
        report = load_encoder_into(network, checkpoint, log=lambda *a: None)
    assert report.fraction_loaded == 1.0 and not report.unexpected
    for name, tensor in checkpoint.tensors.items():
        assert torch.equal(network.encoder.state_dict()[name], tensor)


def test_residual_encoder_stem_travels_with_the_encoder(tmp_path):
    architecture = residual_architecture()
    torch.manual_seed(0)
    source = build_stock_network(architecture, 1).encoder
    path = tmp_path / "enc.safetensors"
    save_encoder_checkpoint(
        path,
        source.state_dict(),
        {"family": "cnn", "normalization": {"scheme": "zscore"}, "encoder_config": cnn_encoder_config(architecture, 1)},
    )
    network = build_stock_network(architecture, 2)  # two input channels: the first conv is adapted
    with encoder_and_stem_as_encoder(network):
        report = load_encoder_into(network, path, log=lambda *a: None)
    assert network.key_to_encoder == "encoder.stages"  # restored after loading
    assert report.fraction_loaded == 1.0 and "stem.convs.0.conv.weight" in report.adapted
    stem_norm = "stem.convs.0.norm.weight"
    assert torch.equal(network.encoder.state_dict()[stem_norm], source.state_dict()[stem_norm])


def test_cnn_encoder_needs_a_dataset(tmp_path, capsys, png_folder):
    assert main(["--encoder", "cnn", "-i", png_folder, "-o", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert (
        "--encoder cnn builds nnU-Net's network from a dataset's plans; pass -d DATASET or --plans-of"
        in capsys.readouterr().err
    )


@pytest.mark.slow  # the preprocessed_dataset fixture
def test_plans_of_takes_the_network_from_a_dataset_without_its_images(
    tmp_path, monkeypatch, preprocessed_dataset, png_folder
):
    plans = _env(monkeypatch, preprocessed_dataset)
    out = tmp_path / "run"
    assert (
        main(
            [
                "--encoder",
                "cnn",
                "--plans-of",
                "990",
                "-i",
                png_folder,
                "-o",
                str(out),
                "--patch-size",
                "64",
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--workers",
                "0",
                "-device",
                "cpu",
                "--precision",
                "fp32",
                "--cnn-visible-norm",
            ]
        )
        == 0
    )
    checkpoint = read_encoder_checkpoint(out / "encoder.safetensors")
    assert checkpoint.metadata["mask"]["norm_statistics"] == "visible"  # and still nnU-Net's tensors, below
    assert checkpoint.encoder_config["architecture"] == plans["configurations"]["2d"]["architecture"]
    assert [s["type"] for s in checkpoint.metadata["data_sources"]["sources"]] == ["files"]
