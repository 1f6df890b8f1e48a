"""A dataset id or name -> its folder, by nnU-Net's own lookup; a configuration's dimensions; the environment of
nnU-Net's commands."""

import os

import pytest

from nnunetv2_vismae.io.nnunet import (
    CONFIGURATION_2D,
    command_environment,
    configuration_dims,
    ext_trainer_folder,
    make_folders,
    preprocessed_folder,
)
from tests.conftest import set_nnunet_folders


class UserError(Exception):
    pass


@pytest.fixture
def folders(tmp_path, monkeypatch):
    folders = make_folders(tmp_path)
    set_nnunet_folders(monkeypatch, folders)
    (tmp_path / "nnUNet_preprocessed" / "Dataset004_Hippocampus").mkdir()
    return folders


@pytest.mark.parametrize("dataset", [4, "4", "004", "Dataset004_Hippocampus"])
def test_an_id_or_a_name_finds_the_preprocessed_folder(folders, dataset):
    expected = os.path.join(folders["nnUNet_preprocessed"], "Dataset004_Hippocampus")
    assert str(preprocessed_folder(dataset, UserError)) == expected


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("5", "Found no dataset folder for dataset 5 in nnUNet_raw ("),
        ("Dataset005_Other", "Found no dataset folder for dataset Dataset005_Other in nnUNet_preprocessed ("),
        ("Hippocampus", "Dataset 'Hippocampus' is neither an integer id nor a DatasetXXX_Name."),
        ("4", "Dataset id 4 matches several folders: Dataset004_Hippocampus, Dataset004_Other."),
    ],
)
def test_what_is_not_one_folder_is_one_sentence(folders, dataset, message):
    if "several" in message:  # nnU-Net's lookup also reads the raw folder
        os.mkdir(os.path.join(folders["nnUNet_raw"], "Dataset004_Other"))
    with pytest.raises(UserError) as error:
        preprocessed_folder(dataset, UserError)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_without_the_variable_it_says_which_to_set(folders, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed")
    with pytest.raises(UserError, match="The environment variable nnUNet_preprocessed is not set"):
        preprocessed_folder(4, UserError)


def test_commands_find_our_trainers_next_to_the_users(monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", "/mine")
    env = command_environment(nnUNet_compile="f")
    assert env["nnUNet_extTrainer"] == os.pathsep.join(["/mine", ext_trainer_folder()])
    assert env["nnUNet_compile"] == "f" and env["PATH"] == os.environ["PATH"]


def test_a_configurations_dimensions_follow_inherits_from_as_nnunet_does():
    plans = {
        "configurations": {
            "2d": {"patch_size": [64, 64]},
            "3d_fullres": {"patch_size": [32, 48, 48]},
            "3d_cascade_fullres": {"inherits_from": "3d_fullres"},
        }
    }
    assert configuration_dims(plans, CONFIGURATION_2D) == 2
    assert configuration_dims(plans, "3d_fullres") == 3
    assert configuration_dims(plans, "3d_cascade_fullres") == 3


@pytest.mark.parametrize(
    "configurations",
    [{}, {"2d": {}}, {"2d": {"inherits_from": "2d"}}, {"2d": {"patch_size": []}}, {"2d": "text"}],
    ids=["missing", "no-patch-size", "inherits-itself", "empty-patch", "not-a-dict"],
)
def test_a_configuration_without_a_patch_size_is_one_sentence(configurations):
    with pytest.raises(UserError, match=r"^The plans have no configuration '2d' with a patch size"):
        configuration_dims({"configurations": configurations}, CONFIGURATION_2D, UserError)
