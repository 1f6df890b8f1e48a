"""``nnUNetv2_vismae_plan -c``: plans of a 3D configuration for a 3D cnn checkpoint, earlier configurations
kept, and every disagreement of dimensions refused in one sentence (issue 32). The plans are written by
hand (nnU-Net's keys, the networks of tests/checkpoint/test_spatial_dims.py): nothing is preprocessed."""

from __future__ import annotations

import json

import pytest

from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.io.nnunet import CONFIGURATION_2D, CONFIGURATION_3D
from nnunetv2_vismae.planning import cli
from tests.checkpoint.test_spatial_dims import PLAIN_3D, save_cnn
from tests.pretrain.test_cnn_family import PLAIN


def configuration(architecture: dict, patch: list[int], identifier: str) -> dict:
    return {
        "data_identifier": identifier,
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "spacing": [1.0] * len(patch),
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {},
        "resampling_fn_seg_kwargs": {},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {},
        "batch_dice": True,
        "architecture": architecture,
    }


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    folder = tmp_path / "preprocessed" / "Dataset321_Vol"
    folder.mkdir(parents=True)
    plans = {
        "dataset_name": "Dataset321_Vol",
        "plans_name": "nnUNetPlans",
        "configurations": {
            CONFIGURATION_2D: configuration(PLAIN, [32, 32], "nnUNetPlans_2d"),
            CONFIGURATION_3D: configuration(PLAIN_3D, [16, 32, 32], "nnUNetPlans_3d_fullres"),
        },
    }
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0}}))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {2: folder / "cnn2d.safetensors", 3: folder / "cnn3d.safetensors"}
    save_cnn(paths[2], PLAIN)
    save_cnn(paths[3], PLAIN_3D)
    return paths


def one_sentence_refusal(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_a_3d_checkpoint_plans_3d_fullres_and_the_2d_configuration_stays(dataset, checkpoints, capsys):
    assert cli.main(["-d", "321", "--pretrained", str(checkpoints[2])]) == 0
    assert cli.main(["-d", "321", "-c", CONFIGURATION_3D, "--pretrained", str(checkpoints[3])]) == 0
    out = capsys.readouterr().out
    assert f"Train with: nnUNetv2_train 321 {CONFIGURATION_3D} FOLD -p nnUNetMAEPlans -tr nnUNetTrainerMAE" in out
    derived = json.loads((dataset / "nnUNetMAEPlans.json").read_text())
    source = json.loads((dataset / "nnUNetPlans.json").read_text())["configurations"]
    assert list(derived["configurations"]) == [CONFIGURATION_2D, CONFIGURATION_3D]
    for name, dims in ((CONFIGURATION_2D, 2), (CONFIGURATION_3D, 3)):
        config = derived["configurations"][name]
        assert config["architecture"] == source[name]["architecture"]
        assert config["data_identifier"] == source[name]["data_identifier"]
        assert config[PRETRAINED_KEY]["path"] == str(checkpoints[dims].resolve())
    assert cli.written_by_us(dataset / "nnUNetMAEPlans.json")


def test_replanning_2d_keeps_the_3d_configuration(dataset, checkpoints):
    assert cli.main(["-d", "321", "-c", CONFIGURATION_3D, "--pretrained", str(checkpoints[3])]) == 0
    assert cli.main(["-d", "321", "-c", CONFIGURATION_2D, "--pretrained", str(checkpoints[2])]) == 0
    derived = json.loads((dataset / "nnUNetMAEPlans.json").read_text())
    assert sorted(derived["configurations"]) == sorted([CONFIGURATION_2D, CONFIGURATION_3D])


@pytest.mark.parametrize(
    "dims, configuration, planned_dims",
    [(2, CONFIGURATION_3D, 3), (3, CONFIGURATION_2D, 2)],
    ids=["2d-on-3d", "3d-on-2d"],
)
def test_a_checkpoint_of_other_dimensions_than_the_configuration_is_refused(
    dataset, checkpoints, capsys, dims, configuration, planned_dims
):
    err = one_sentence_refusal(["-d", "321", "-c", configuration, "--pretrained", str(checkpoints[dims])], capsys)
    assert err.endswith(
        f"Encoder checkpoint {checkpoints[dims]} holds a {dims}D encoder, but configuration {configuration} of plans "
        f"nnUNetPlans is {planned_dims}D; plan the configuration it was pretrained on."
    )
    assert not (dataset / "nnUNetMAEPlans.json").exists()


def test_a_2d_swin_checkpoint_plans_no_3d_configuration(dataset, tmp_path, capsys):
    from tests.benchmark.test_cnn_arm import swin_checkpoint

    swin = swin_checkpoint(tmp_path / "swin.safetensors")
    err = one_sentence_refusal(["-d", "321", "-c", CONFIGURATION_3D, "--pretrained", str(swin)], capsys)
    assert err.endswith(
        f"The swin encoder family plans only 2D configurations, not {CONFIGURATION_3D} (3D): a 3D Swin (3D windows) "
        "is the swin3d encoder family: plan 3D without --pretrained or with a swin3d checkpoint."
    )
    assert not (dataset / "nnUNetVisMAEPlans.json").exists()


def test_a_configuration_the_plans_lack_is_refused(dataset, checkpoints, capsys):
    err = one_sentence_refusal(["-d", "321", "-c", "3d_lowres", "--pretrained", str(checkpoints[3])], capsys)
    assert "has no '3d_lowres' configuration" in err and "nnUNetv2_plan_and_preprocess -c 3d_lowres" in err


def test_plans_with_a_configuration_of_nnunets_own_are_not_ours(dataset, checkpoints):
    assert cli.main(["-d", "321", "-c", CONFIGURATION_3D, "--pretrained", str(checkpoints[3]), "-o", "Mixed"]) == 0
    mixed = dataset / "Mixed.json"
    plans = json.loads(mixed.read_text())
    plans["configurations"][CONFIGURATION_2D] = configuration(PLAIN, [32, 32], "nnUNetPlans_2d")
    mixed.write_text(json.dumps(plans))
    assert not cli.written_by_us(mixed)
