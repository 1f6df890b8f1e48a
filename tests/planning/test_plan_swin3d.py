"""``nnUNetv2_vismae_plan -c 3d_fullres``: Swin3dUNet plans for a swin3d checkpoint or from scratch (SwinUNETR's
encoder), the 2d configuration of the same plans kept, and swin checkpoints of the other dimensions refused in one
sentence. The nnU-Net plans are the hand-written ones of test_plan_dims.py: nothing is preprocessed."""

from __future__ import annotations

import json

import pytest
import torch

from nnunetv2_vismae.architectures import Swin3dEncoderConfig, Swin3dUNet
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D
from nnunetv2_vismae.planning import cli
from nnunetv2_vismae.planning.vismae_plans import compatible_patch_size, scaled_batch_size
from tests.conftest import TINY_ENCODER_3D, save_swin3d_checkpoint
from tests.planning.test_plan_dims import dataset, one_sentence_refusal  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def swin3d(tmp_path_factory):
    return save_swin3d_checkpoint(tmp_path_factory.mktemp("swin3d") / "swin3d.safetensors")


def planned(folder, configuration: str) -> dict:
    return json.loads((folder / "nnUNetVisMAEPlans.json").read_text())["configurations"][configuration]


def test_a_swin3d_checkpoint_plans_swin3dunet_on_3d_fullres_with_its_encoder(dataset, swin3d, capsys):  # noqa: F811
    assert cli.main(["-d", "321", "-c", CONFIGURATION_3D, "--pretrained", str(swin3d)]) == 0
    assert (
        f"nnUNetv2_train 321 {CONFIGURATION_3D} FOLD -p nnUNetVisMAEPlans -tr VisMAETrainer" in capsys.readouterr().out
    )
    config = planned(dataset, CONFIGURATION_3D)
    source = json.loads((dataset / "nnUNetPlans.json").read_text())["configurations"][CONFIGURATION_3D]
    encoder = Swin3dEncoderConfig.from_json(TINY_ENCODER_3D)
    assert config["data_identifier"] == source["data_identifier"] and config["spacing"] == source["spacing"]
    assert config["patch_size"] == [32, 32, 32]  # nnU-Net's [16, 32, 32] at the encoder's total stride 32
    assert config["batch_size"] == scaled_batch_size(source["batch_size"], source["patch_size"], [32, 32, 32])
    architecture = config["architecture"]
    assert architecture["network_class_name"] == "nnunetv2_vismae.architectures.Swin3dUNet"
    assert architecture["arch_kwargs"]["strides"] == Swin3dUNet.output_strides(encoder)
    assert config[PRETRAINED_KEY]["path"] == str(swin3d.resolve())
    with torch.device("meta"):  # what get_network_from_plans builds, with the checkpoint's encoder
        net = Swin3dUNet(1, 2, deep_supervision=True, **architecture["arch_kwargs"])
    assert net.encoder.config == Swin3dEncoderConfig.from_json({**TINY_ENCODER_3D, "in_channels": 1})
    assert cli.written_by_us(dataset / "nnUNetVisMAEPlans.json")


def test_from_scratch_3d_plans_swinunetrs_encoder_and_the_2d_configuration_stays(dataset, capsys):  # noqa: F811
    assert cli.main(["-d", "321"]) == 0
    assert cli.main(["-d", "321", "-c", CONFIGURATION_3D]) == 0
    plans = json.loads((dataset / "nnUNetVisMAEPlans.json").read_text())
    assert list(plans["configurations"]) == [CONFIGURATION_2D, CONFIGURATION_3D]
    assert plans["configurations"][CONFIGURATION_2D]["architecture"]["network_class_name"].endswith(".SwinUNet")
    config = plans["configurations"][CONFIGURATION_3D]
    assert Swin3dEncoderConfig.from_json(config["architecture"]["arch_kwargs"]["encoder"]) == Swin3dEncoderConfig()
    assert PRETRAINED_KEY not in config
    assert cli.main(["-d", "321"]) == 0  # and the reverse: replanning 2d keeps 3d_fullres
    assert sorted(json.loads((dataset / "nnUNetVisMAEPlans.json").read_text())["configurations"]) == [
        CONFIGURATION_2D,
        CONFIGURATION_3D,
    ]


def test_an_anisotropic_patch_is_rounded_per_axis():
    assert compatible_patch_size([44, 112, 200], [16, 32, 32]) == [48, 128, 192]


def test_a_swin3d_checkpoint_plans_no_2d_configuration(dataset, swin3d, capsys):  # noqa: F811
    err = one_sentence_refusal(["-d", "321", "-c", CONFIGURATION_2D, "--pretrained", str(swin3d)], capsys)
    assert err.endswith(
        f"The swin3d encoder family plans only 3D configurations, not {CONFIGURATION_2D} (2D): a 2D Swin (2D windows) "
        "is the swin encoder family: plan 2d without --pretrained or with a swin checkpoint."
    )
    assert not (dataset / "nnUNetVisMAEPlans.json").exists()


def test_the_swin_decoder_is_refused_on_3d(dataset, capsys):  # noqa: F811
    err = one_sentence_refusal(["-d", "321", "-c", CONFIGURATION_3D, "--decoder", "swin"], capsys)
    assert err.endswith("Swin3dUNet has the conv decoder only, so leave --decoder out on 3d_fullres.")
