import json

import pytest

from nnunetv2_vismae.architectures import SwinEncoderConfig, SwinUNet
from nnunetv2_vismae.io.nnunet import preprocessed_folder
from nnunetv2_vismae.planning import cli
from nnunetv2_vismae.planning.vismae_plans import (
    PRETRAINED_KEY,
    PlanningError,
    compatible_patch_size,
    derive_vismae_plans,
    load_plans,
    scaled_batch_size,
)


def nnunet_plans(patch=(200, 136), batch=12, configurations=("2d", "3d_fullres")):
    config = {
        "data_identifier": "nnUNetPlans_2d",
        "patch_size": list(patch),
        "batch_size": batch,
        "normalization_schemes": ["ZScoreNormalization"],
        "spacing": [1.0, 1.0],
        "architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": {}},
    }
    return {
        "dataset_name": "Dataset007_X",
        "plans_name": "nnUNetPlans",
        "configurations": {c: dict(config) for c in configurations},
    }


@pytest.fixture
def preprocessed(tmp_path, monkeypatch):
    folder = tmp_path / "Dataset007_X"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(nnunet_plans()))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    return folder


def test_patch_size_is_rounded_to_the_encoder_stride():
    assert compatible_patch_size([200, 136], 32) == [192, 128]
    assert compatible_patch_size([20, 530], 32) == [32, 544]


def test_batch_size_follows_patch_area_within_bounds():
    assert scaled_batch_size(12, [256, 256], [256, 256]) == 12
    assert scaled_batch_size(12, [256, 256], [512, 512]) == 3
    assert scaled_batch_size(12, [256, 256], [64, 64]) == 24
    assert scaled_batch_size(2, [64, 64], [512, 512]) == 2


def test_derived_plans_train_swinunet_on_the_same_preprocessed_data():
    encoder = SwinEncoderConfig()
    plans = derive_vismae_plans(nnunet_plans(), "nnUNetVisMAEPlans", encoder, "swin")
    assert plans["plans_name"] == "nnUNetVisMAEPlans"
    assert list(plans["configurations"]) == ["2d"]
    config = plans["configurations"]["2d"]
    assert config["data_identifier"] == "nnUNetPlans_2d"
    assert config["patch_size"] == [192, 128] and config["batch_size"] == 13
    arch = config["architecture"]
    assert arch["network_class_name"] == "nnunetv2_vismae.architectures.SwinUNet"
    assert arch["arch_kwargs"]["strides"] == SwinUNet.output_strides(encoder, "swin")
    assert PRETRAINED_KEY not in config
    json.dumps(plans)  # plain JSON
    net = SwinUNet(1, 3, deep_supervision=True, **arch["arch_kwargs"])  # what get_network_from_plans does
    assert net.encoder.config == encoder


def test_source_plans_are_not_modified():
    source = nnunet_plans()
    before = json.dumps(source)
    derive_vismae_plans(source, "P", SwinEncoderConfig(), "conv", {"path": "/x", "content_hash": "h"})
    assert json.dumps(source) == before


def test_plan_command_writes_next_to_nnunet_plans(preprocessed):
    assert cli.main(["-d", "7", "--decoder", "conv"]) == 0
    written = json.loads((preprocessed / "nnUNetVisMAEPlans.json").read_text())
    assert written["configurations"]["2d"]["architecture"]["arch_kwargs"]["decoder"] == "conv"
    assert json.loads((preprocessed / "nnUNetPlans.json").read_text()) == nnunet_plans()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-d", "8"], "Found no dataset folder for dataset 8"),
        (["-d", "7", "-p", "nnUNetResEncUNetMPlans"], "nnUNetResEncUNetMPlans.json does not exist"),
        (["-d", "7", "--pretrained", "/nonexistent/encoder.safetensors"], "/nonexistent/encoder.safetensors"),
    ],
)
def test_plan_command_user_errors_are_one_sentence_and_exit_2(preprocessed, capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_missing_2d_configuration_and_environment(tmp_path, monkeypatch):
    folder = tmp_path / "Dataset009_Y"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(nnunet_plans(configurations=("3d_fullres",))))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    with pytest.raises(PlanningError, match="no '2d' configuration"):
        load_plans(preprocessed_folder(9, PlanningError), "nnUNetPlans")
    monkeypatch.delenv("nnUNet_preprocessed")
    with pytest.raises(PlanningError, match="nnUNet_preprocessed is not set"):
        preprocessed_folder(9, PlanningError)


def _tree(folder):
    return {str(p): p.read_bytes() for p in sorted(folder.parent.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["../../../x", "../x", "sub/x", "a\\b", "..", "x.json", "plans x"])
def test_plan_output_name_must_be_a_plain_name(preprocessed, capsys, name):
    before = _tree(preprocessed)
    assert cli.main(["-d", "7", "-o", name]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"{cli.PROG}: error: -o must be a plain plans name (ASCII letters, digits, '_' and '-'), got {name!r}."
    )
    assert _tree(preprocessed) == before


@pytest.mark.parametrize(
    "name, message",
    [
        ("nnUNetPlans", "-o nnUNetPlans is the source plans (-p); give the plans to write another name."),
        ("nnUNetResEncUNetMPlans", "-o nnUNetResEncUNetMPlans is the name of nnU-Net's own plans"),
        ("Mine", "Mine.json holds plans that nnUNetv2_vismae_plan did not write"),
    ],
)
def test_plan_never_overwrites_plans_it_did_not_write(preprocessed, capsys, name, message):
    (preprocessed / "Mine.json").write_text(json.dumps(nnunet_plans(configurations=("2d",))))
    before = _tree(preprocessed)
    assert cli.main(["-d", "7", "-o", name]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert _tree(preprocessed) == before


def test_plan_rewrites_its_own_plans(preprocessed):
    assert cli.main(["-d", "7", "-o", "nnUNetVisMAEPlans-swin", "--decoder", "conv"]) == 0
    assert cli.main(["-d", "7", "-o", "nnUNetVisMAEPlans-swin", "--decoder", "swin"]) == 0
    written = json.loads((preprocessed / "nnUNetVisMAEPlans-swin.json").read_text())
    assert written["configurations"]["2d"]["architecture"]["arch_kwargs"]["decoder"] == "swin"
