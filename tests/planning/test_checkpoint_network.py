"""``nnUNetv2_vismae_plan --checkpoint-network``: a converted nnssl checkpoint whose network is not the one the
dataset's plans build is planned on that dataset's 3d_fullres data (issue 32): the checkpoint's network, the
plans' spacing, normalization and preprocessed data, their patch rounded up to the network's total stride, batch
size 2; the network nnU-Net builds from those plans takes every encoder and stem tensor. Plans written by hand."""

from __future__ import annotations

import json

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_vismae.checkpoint import load_encoder_into, read_encoder_checkpoint
from nnunetv2_vismae.checkpoint.cnn_encoder import encoder_and_stem_as_encoder
from nnunetv2_vismae.checkpoint.convert import main as convert
from nnunetv2_vismae.checkpoint.reference import PRETRAINED_KEY
from nnunetv2_vismae.io.nnunet import CONFIGURATION_3D
from nnunetv2_vismae.planning import cli
from nnunetv2_vismae.planning.cnn_plans import fitted_patch_size, total_strides
from nnunetv2_vismae.training.cnn_trainers import nnUNetTrainerMAE
from tests.checkpoint.test_convert_nnssl import nnssl_network, save_like_nnssl, serialized_plan
from tests.checkpoint.test_spatial_dims import PLAIN_3D, save_cnn
from tests.planning.test_plan_dims import configuration, one_sentence_refusal

PATCH = [14, 38, 36]  # not a multiple of the small ResEnc's total stride 4 on two axes
SPACING = [3.0, 0.8, 0.8]


@pytest.fixture(scope="module")
def nnssl_checkpoint(tmp_path_factory):
    """A small ResEnc saved the way nnssl saves it, converted by nnUNetv2_vismae_convert --from nnssl."""
    folder = tmp_path_factory.mktemp("nnssl")
    source, out = folder / "checkpoint_final.pth", folder / "resenc.safetensors"
    save_like_nnssl(source, nnssl_network(), serialized_plan())
    assert convert(["--from", "nnssl", str(source), str(out)]) == 0
    return out


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """Plans of another network (nnU-Net's plain U-Net), patch and spacing than the checkpoint's, two channels."""
    folder = tmp_path / "preprocessed" / "Dataset322_Other"
    folder.mkdir(parents=True)
    source = configuration(PLAIN_3D, PATCH, "nnUNetPlans_3d_fullres")
    source.update(spacing=SPACING, batch_size=4, normalization_schemes=["CTNormalization", "ZScoreNormalization"])
    plans = {"dataset_name": folder.name, "plans_name": "nnUNetPlans", "configurations": {CONFIGURATION_3D: source}}
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    channels = {"channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "tumor": 1}}
    (folder / "dataset.json").write_text(json.dumps(channels))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    return folder


def planned(dataset) -> tuple[dict, dict]:
    derived = json.loads((dataset / "nnUNetMAEPlans.json").read_text())
    source = json.loads((dataset / "nnUNetPlans.json").read_text())
    return derived, source


def test_the_checkpoints_network_is_planned_on_the_datasets_data(dataset, nnssl_checkpoint, capsys):
    argv = ["-d", "322", "-c", CONFIGURATION_3D, "--pretrained", str(nnssl_checkpoint), "--checkpoint-network"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Planned the checkpoint's ResidualEncoderUNet on nnUNetPlans_3d_fullres (spacing [3.0, 0.8, 0.8]): " in out
    assert "patch size [16, 40, 36], batch size 2." in out
    assert f"nnUNetv2_train 322 {CONFIGURATION_3D} FOLD -p nnUNetMAEPlans -tr nnUNetTrainerMAE" in out
    derived, source = planned(dataset)
    config, original = derived["configurations"][CONFIGURATION_3D], source["configurations"][CONFIGURATION_3D]
    assert config["architecture"] == read_encoder_checkpoint(nnssl_checkpoint).encoder_config["architecture"]
    assert config["patch_size"] == [16, 40, 36] and config["batch_size"] == 2
    for kept in ("spacing", "normalization_schemes", "data_identifier", "preprocessor_name", "use_mask_for_norm"):
        assert config[kept] == original[kept]
    assert config[PRETRAINED_KEY]["path"] == str(nnssl_checkpoint.resolve())
    assert cli.written_by_us(dataset / "nnUNetMAEPlans.json")


def test_nnunets_network_from_those_plans_takes_every_encoder_and_stem_tensor(dataset, nnssl_checkpoint):
    argv = ["-d", "322", "-c", CONFIGURATION_3D, "--pretrained", str(nnssl_checkpoint), "--checkpoint-network"]
    assert cli.main(argv) == 0
    plans = PlansManager(planned(dataset)[0])
    config = plans.get_configuration(CONFIGURATION_3D)
    network = nnUNetTrainerMAE.build_network_architecture(plans, config, 2, 2, True)
    with encoder_and_stem_as_encoder(network):
        report = load_encoder_into(network, read_encoder_checkpoint(nnssl_checkpoint), log=lambda _: None)
    assert report.num_loaded == report.num_network_tensors and not report.missing and not report.unexpected
    # the CT+PET input projection from the MRI one (one conv, which the stem also lists as all_modules.0)
    assert set(report.adapted) == {"stem.convs.0.conv.weight", "stem.convs.0.all_modules.0.weight"}
    with torch.no_grad():
        outputs = network.eval()(torch.zeros(1, 2, *config.patch_size))
    assert list(outputs[0].shape[2:]) == config.patch_size  # the patch fits the network's strides


def test_another_network_without_the_flag_names_it(dataset, nnssl_checkpoint, capsys):
    err = one_sentence_refusal(["-d", "322", "-c", CONFIGURATION_3D, "--pretrained", str(nnssl_checkpoint)], capsys)
    assert "was pretrained for a different network than the 3d_fullres configuration of plans nnUNetPlans" in err
    assert err.endswith("or add --checkpoint-network to plan its own network on this configuration's data.")
    assert not (dataset / "nnUNetMAEPlans.json").exists()


def test_with_a_checkpoint_of_the_plans_own_network_the_flag_changes_nothing(dataset, tmp_path):
    checkpoint = tmp_path / "plain3d.safetensors"
    save_cnn(checkpoint, PLAIN_3D)
    argv = ["-d", "322", "-c", CONFIGURATION_3D, "--pretrained", str(checkpoint)]
    assert cli.main(argv) == 0
    without = planned(dataset)[0]
    assert cli.main([*argv, "--checkpoint-network"]) == 0
    derived = planned(dataset)[0]
    assert derived == without
    assert derived["configurations"][CONFIGURATION_3D]["batch_size"] == 4  # the plans' own


def test_the_flag_without_a_checkpoint_is_refused(dataset, capsys):
    err = one_sentence_refusal(["-d", "322", "-c", CONFIGURATION_3D, "--checkpoint-network"], capsys)
    assert err.endswith("--checkpoint-network plans the network of a checkpoint; name it with --pretrained.")


def test_patch_sizes_round_up_to_the_total_stride_per_axis():
    architecture = {"arch_kwargs": {"strides": [1, [1, 2, 2], [2, 2, 2]]}}
    assert total_strides(architecture, 3) == [2, 4, 4]
    assert fitted_patch_size([3, 8, 9], [2, 4, 4]) == [4, 8, 12]
