"""Weights from strangers: every path that loads weights refuses a pickle that would run code.

The crafted file creates a marker file when unpickled; after each refusal the marker must not exist.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import set_nnunet_folders
from tests.reliability import (
    SHELL_THROUGH_TORCH_NN,
    TINY_SWIN,
    code_running_cnn_checkpoint,
    malicious_pickle,
    nnunet_tree,
    swin_encoder,
    write_checkpoint,
)

COMMANDS = {  # command -> (main's module, arguments; {evil} is the crafted file)
    "nnUNetv2_vismae_convert": ("nnunetv2_vismae.checkpoint.convert", "{evil} {tmp}/encoder.safetensors"),
    "nnUNetv2_vismae_inspect": ("nnunetv2_vismae.checkpoint.cli", "{evil}"),
    "nnUNetv2_vismae_plan": ("nnunetv2_vismae.planning.cli", "-d 1 --pretrained {evil}"),
    "nnUNetv2_vismae_benchmark": ("nnunetv2_vismae.benchmark.cli", "-d 1 -f 0 --arms vismae --pretrained {evil}"),
    "nnUNetv2_vismae_benchmark --dry-run": (
        "nnunetv2_vismae.benchmark.cli",
        "-d 1 -f 0 --arms vismae --pretrained {evil} --dry-run",
    ),
}


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code_ran"
    path = malicious_pickle(tmp_path / "evil.safetensors", marker)
    yield path
    assert not marker.exists(), "unpickling ran the payload"


def test_the_crafted_file_is_live(tmp_path):
    """Without the protections the payload runs: the tests below could fail."""
    marker = tmp_path / "code_ran"
    shutil.copy(malicious_pickle(tmp_path / "evil.safetensors", marker), tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def run_refused(command: tuple[str, str], evil, tmp_path, monkeypatch, capsys) -> tuple[object, str]:
    """Run a command's main (module, arguments with {evil} and {tmp}) on a dataset tree; its exit code and stderr."""
    set_nnunet_folders(monkeypatch, nnunet_tree(tmp_path / "nnunet"))
    module, arguments = command
    try:
        code = importlib.import_module(module).main(arguments.format(evil=evil, tmp=tmp_path).split())
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_refuse_a_malicious_pickle(command, evil, tmp_path, monkeypatch, capsys):
    code, err = run_refused(COMMANDS[command], evil, tmp_path, monkeypatch, capsys)
    assert code not in (0, None) and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "pickl" in err and "refused" in err, err  # pickle, unpickling
    assert not (tmp_path / "encoder.safetensors").exists()


def test_trainer_refuses_a_malicious_pickle_named_in_the_plans(evil, monkeypatch):
    from tests.test_cli_errors import _trainer_stopping_at_initialize

    reference = {"path": str(evil), "content_hash": "0" * 64, "metadata_hash": "0" * 64}
    trainer = _trainer_stopping_at_initialize(reference, monkeypatch)
    with pytest.raises(SystemExit, match="pickle .* refused because unpickling can run arbitrary code"):
        trainer.initialize()


def test_pretraining_refuses_a_malicious_state_file(evil, tmp_path):
    import numpy as np
    from PIL import Image

    from pretrain.errors import PretrainUserError
    from pretrain.runtime import setup_runtime
    from pretrain.train import Pretrainer
    from tests.pretrain.helpers import TINY, parse

    images, out = tmp_path / "images", tmp_path / "run"
    images.mkdir()
    out.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(images / "a.png")
    shutil.copy(evil, out / "state.pt")
    with pytest.raises(PretrainUserError, match=r"state.pt holds objects other than tensors .* was refused"):
        Pretrainer(parse([*TINY, "-i", str(images), "-o", str(out)]), setup_runtime("cpu")).setup()
    assert os.listdir(out) != []


@pytest.mark.parametrize(
    "content, kind",
    [
        (b"step 87\nloss 0.25\n", "plain text"),
        (b"The quick brown fox", "plain text"),
        (b"", "empty"),
        (bytes(range(7, 200)), "binary data"),
    ],
)
def test_a_state_file_that_is_no_pickle_is_described_as_what_it_is(tmp_path, content, kind):
    """Issue 17: a plain text state.pt was called a pickle that "can run code"."""
    from pretrain.errors import PretrainUserError
    from pretrain.state import load_state

    path = tmp_path / "state.pt"
    path.write_bytes(content)
    with pytest.raises(PretrainUserError) as info:
        load_state(str(path))
    message = str(info.value)
    assert message == (
        f"{path} is {kind}, not a training state written by torch.save; move it away to start a new run in this folder."
    )


# ------------------------------------------- a cnn checkpoint whose architecture block runs a command
CNN_COMMANDS = {  # command -> (main's module, arguments; {evil} is the crafted checkpoint)
    "nnUNetv2_vismae_inspect": ("nnunetv2_vismae.checkpoint.cli", "{evil}"),
    "nnUNetv2_vismae_plan": ("nnunetv2_vismae.planning.cli", "-d 1 --pretrained {evil}"),
    "nnUNetv2_vismae_benchmark": (
        "nnunetv2_vismae.benchmark.cli",
        "-d 1 -f 0 --arms cnn-mae --pretrained-cnn {evil} -o {tmp}/bench",
    ),
    "nnUNetv2_vismae_benchmark --dry-run": (
        "nnunetv2_vismae.benchmark.cli",
        "-d 1 -f 0 --arms cnn-mae --pretrained-cnn {evil} -o {tmp}/bench --dry-run",
    ),
    "nnUNetv2_vismae_classify benchmark": (
        "nnunetv2_vismae.classification.cli",
        "benchmark -i {tmp} -o {tmp}/classify --pretrained {evil}",
    ),
}


@pytest.fixture
def evil_cnn(tmp_path):
    marker = tmp_path / "code_ran"
    yield code_running_cnn_checkpoint(tmp_path / "encoder.safetensors", marker)
    assert not marker.exists(), "building the network ran the checkpoint's command"


def test_the_crafted_cnn_checkpoint_is_live(tmp_path):
    """nnU-Net's own network building runs the command: the tests below could fail."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from safetensors import safe_open

    marker = tmp_path / "code_ran"
    with safe_open(str(code_running_cnn_checkpoint(tmp_path / "encoder.safetensors", marker)), "pt") as f:
        architecture = json.loads(f.metadata()["encoder_config"])["architecture"]
    with pytest.raises(TypeError):  # os.system's exit status is no module; the command has run by then
        get_network_from_plans(
            architecture["network_class_name"], architecture["arch_kwargs"], architecture["_kw_requires_import"], 1, 2
        )
    assert marker.exists()


REFUSED_DROPOUT = (
    f'encoder_config.architecture.arch_kwargs.dropout_op is "{SHELL_THROUGH_TORCH_NN}", expected null or one of'
)


@pytest.mark.parametrize("command", list(CNN_COMMANDS))
def test_commands_refuse_a_cnn_checkpoint_that_would_run_a_command(command, evil_cnn, tmp_path, monkeypatch, capsys):
    code, err = run_refused(CNN_COMMANDS[command], evil_cnn, tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert REFUSED_DROPOUT in err, err


def test_trainer_refuses_a_cnn_checkpoint_that_would_run_a_command(evil_cnn, monkeypatch):
    from tests.test_cli_errors import _trainer_stopping_at_initialize

    reference = {"path": str(evil_cnn), "content_hash": "0" * 64, "metadata_hash": "0" * 64}
    trainer = _trainer_stopping_at_initialize(reference, monkeypatch)
    with pytest.raises(SystemExit) as stop:
        trainer.initialize()
    assert REFUSED_DROPOUT in str(stop.value.code) and "\n" not in str(stop.value.code)


def test_plans_whose_architecture_would_run_a_command_build_nothing(evil_cnn):
    """Pretraining and planning build nnU-Net's network from a dataset's plans file the same way."""
    from safetensors import safe_open

    from nnunetv2_vismae.checkpoint.cnn_encoder import build_stock_network

    with safe_open(str(evil_cnn), "pt") as f:
        architecture = json.loads(f.metadata()["encoder_config"])["architecture"]
    with pytest.raises(ValueError, match=f'^architecture.arch_kwargs.dropout_op is "{SHELL_THROUGH_TORCH_NN}"'):
        build_stock_network(architecture, 1)


def _plans_with(architecture: dict):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager({"plans_name": "nnUNetMAEPlans", "configurations": {"2d": {"architecture": architecture}}})


@pytest.mark.parametrize("trainer", ["VisMAETrainer", "nnUNetTrainerMAE"])
def test_trainers_build_no_network_from_plans_that_would_run_a_command(trainer, evil_cnn):
    """nnUNetv2_train and nnUNetv2_predict build the network the plans name through the trainer."""
    from safetensors import safe_open

    from nnunetv2_vismae import training
    from nnunetv2_vismae.training import cnn_trainers

    with safe_open(str(evil_cnn), "pt") as f:
        plans = _plans_with(json.loads(f.metadata()["encoder_config"])["architecture"])
    cls = getattr(training, trainer, None) or getattr(cnn_trainers, trainer)
    with pytest.raises(SystemExit) as stop:
        cls.build_network_architecture(plans, plans.get_configuration("2d"), 1, 2)
    assert str(stop.value.code).startswith(
        f'Plans nnUNetMAEPlans are refused: architecture.arch_kwargs.dropout_op is "{SHELL_THROUGH_TORCH_NN}"'
    )


def test_trainers_import_no_module_a_plans_network_name_gives(tmp_path, monkeypatch):
    from nnunetv2_vismae.training.cnn_trainers import refuse_swin_plans

    marker = tmp_path / "code_ran"
    (tmp_path / "plans_payload.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plans = {"plans_name": "P", "configurations": {"2d": {"architecture": {"network_class_name": "plans_payload.Net"}}}}
    refuse_swin_plans("nnUNetTrainerMAE", plans, "2d")
    assert not marker.exists()


def test_trainers_build_the_networks_our_plans_name():
    from nnunetv2_vismae.architectures import SwinEncoderConfig
    from nnunetv2_vismae.planning.vismae_plans import derive_vismae_plans
    from nnunetv2_vismae.training import VisMAETrainer
    from tests.pretrain.test_cnn_family import PLAIN, residual_architecture

    source = {"configurations": {"2d": {"patch_size": [64, 64], "batch_size": 2}}}
    swin = derive_vismae_plans(source, "P", SwinEncoderConfig(**TINY_SWIN), "conv")["configurations"]["2d"]
    built = []
    for architecture in (swin["architecture"], PLAIN, residual_architecture()):
        plans = _plans_with(architecture)
        built.append(type(VisMAETrainer.build_network_architecture(plans, plans.get_configuration("2d"), 1, 2)))
    assert [cls.__name__ for cls in built] == ["SwinUNet", "PlainConvUNet", "ResidualEncoderUNet"]


# ------------------------------------------------------ metadata swapped after planning (the hash check)
def _planned_swin_checkpoint(tmp_path) -> tuple[Path, dict]:
    """A swin checkpoint; (its file, the reference nnUNetv2_vismae_plan records for it in the plans)."""
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
    from nnunetv2_vismae.checkpoint.reference import checkpoint_reference

    path = tmp_path / "encoder.safetensors"
    write_checkpoint(path, swin_encoder())
    return path, checkpoint_reference(path, read_encoder_checkpoint(path))


def test_trainer_refuses_a_checkpoint_whose_metadata_changed_after_planning(tmp_path, monkeypatch):
    from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
    from tests.checkpoint.test_checkpoint_schema import crafted
    from tests.test_cli_errors import _trainer_stopping_at_initialize

    path, reference = _planned_swin_checkpoint(tmp_path)
    content_hash = read_encoder_checkpoint(path).content_hash
    crafted(path, path, normalization={"scheme": "ct", "ct_clip": [-100, 100]})  # tensors, content hash unchanged
    assert read_encoder_checkpoint(path).content_hash == content_hash
    trainer = _trainer_stopping_at_initialize(reference, monkeypatch)
    with pytest.raises(SystemExit) as stop:
        trainer.initialize()
    message = str(stop.value.code)
    assert message.startswith(f"VisMAETrainer: Encoder checkpoint {path} has metadata hash ") and "\n" not in message
    assert message.endswith("was expected (its metadata changed since its hash was recorded).")


def test_trainer_refuses_plans_that_record_no_metadata_hash(tmp_path, monkeypatch):
    """Plans written before this check: one sentence that says what to do, not a silent load."""
    from tests.test_cli_errors import _trainer_stopping_at_initialize

    path, reference = _planned_swin_checkpoint(tmp_path)
    del reference["metadata_hash"]
    with pytest.raises(SystemExit) as stop:
        _trainer_stopping_at_initialize(reference, monkeypatch).initialize()
    assert str(stop.value.code) == (
        f"VisMAETrainer: The plans record no metadata hash for encoder checkpoint {path.resolve()}, so a changed "
        "architecture or normalization in it would go unnoticed; run nnUNetv2_vismae_plan again."
    )
