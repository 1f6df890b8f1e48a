"""Every command's user errors: one sentence naming the value and what was expected, a non-zero
exit, no traceback. Commands run in this process through their ``main`` (the console scripts' code)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

from tests.reliability import (deny_write, nnunet_tree, swin_encoder, three_channel_checkpoint, three_d_checkpoint,
                               write_checkpoint)

MAINS = {
    "nnUNetv2_vismae_pretrain": "pretrain.cli",
    "nnUNetv2_vismae_plan": "nnunetv2_vismae.planning.cli",
    "nnUNetv2_vismae_benchmark": "nnunetv2_vismae.benchmark.cli",
    "nnUNetv2_vismae_inspect": "nnunetv2_vismae.checkpoint.cli",
    "nnUNetv2_vismae_convert": "nnunetv2_vismae.checkpoint.convert",
    "nnUNetv2_vismae_demo": "nnunetv2_vismae.demo.cli",
}
# (command, arguments, environment without nnU-Net's variables?, expected part of the sentence)
CASES = {
    "pretrain: no nnUNet_preprocessed": ("nnUNetv2_vismae_pretrain", "-d 1 -o {tmp}/out", True, "nnUNet_preprocessed"),
    "pretrain: unknown dataset": ("nnUNetv2_vismae_pretrain", "-d 7 -o {tmp}/out", False, "Dataset 7 was not found"),
    "pretrain: plans without 2d": ("nnUNetv2_vismae_pretrain", "-d 2 -o {tmp}/out", False,
                                   "Configuration 2d is not in"),
    "pretrain: unwritable output": ("nnUNetv2_vismae_pretrain", "-d 1 -o {locked}", False,
                                    "Output folder {locked} cannot be written: {locked} is not writable."),
    "pretrain: bad --max-unusable": ("nnUNetv2_vismae_pretrain", "-d 1 -o {tmp}/out --max-unusable 2", False,
                                     "--max-unusable is a share between 0 and 1, got 2.0."),
    "pretrain: bad --max-bad-steps": ("nnUNetv2_vismae_pretrain", "-d 1 -o {tmp}/out --max-bad-steps 0", False,
                                      "--max-bad-steps must be at least 1, got 0."),
    "plan: no nnUNet_preprocessed": ("nnUNetv2_vismae_plan", "-d 1", True, "nnUNet_preprocessed is not set"),
    "plan: unknown dataset": ("nnUNetv2_vismae_plan", "-d 7", False, "Found no folder for dataset 7"),
    "plan: plans without 2d": ("nnUNetv2_vismae_plan", "-d 2", False, "has no '2d' configuration"),
    "plan: 3D checkpoint": ("nnUNetv2_vismae_plan", "-d 1 --pretrained {tmp}/3d.safetensors", False,
                            "'patch_embed.proj.weight' is [12, 1, 4, 4, 4], expected [12, 1, 4, 4]"),
    "plan: wrong channel count": ("nnUNetv2_vismae_plan", "-d 1 --pretrained {tmp}/3ch.safetensors", False,
                                  "'patch_embed.proj.weight' is [12, 3, 4, 4], expected [12, 1, 4, 4]"),
    "plan: unwritable plans folder": ("nnUNetv2_vismae_plan", "-d 1", False, "Dataset001_Tiny is not writable."),
    "benchmark: no nnUNet_results": ("nnUNetv2_vismae_benchmark", "-d 1", True, "nnUNet_preprocessed is not set"),
    "benchmark: unknown dataset": ("nnUNetv2_vismae_benchmark", "-d 7", False, "Found no dataset folder for dataset 7"),
    "benchmark: plans without 2d": ("nnUNetv2_vismae_benchmark", "-d 2 --arms nnunet scratch -f 0", False,
                                    "has no '2d' configuration (it has ['3d_fullres'])"),
    "benchmark: labels 0": ("nnUNetv2_vismae_benchmark", "-d 1 --labels 0 50", False,
                            "--labels must be percentages between 1 and 100, got 0."),
    "benchmark: labels 101": ("nnUNetv2_vismae_benchmark", "-d 1 --labels 101", False, "got 101."),
    "benchmark: missing checkpoint": ("nnUNetv2_vismae_benchmark", "-d 1 --pretrained {tmp}/none.safetensors", False,
                                      "The pretrained checkpoint {tmp}/none.safetensors does not exist."),
    "benchmark: unwritable output": ("nnUNetv2_vismae_benchmark", "-d 1 --arms nnunet -f 0 -o {locked}/bench", False,
                                     "Output folder {locked}/bench cannot be written: {locked} is not writable."),
    "inspect: 3D checkpoint": ("nnUNetv2_vismae_inspect", "{tmp}/3d.safetensors", False, "of wrong shape"),
    "inspect: wrong channel count": ("nnUNetv2_vismae_inspect", "{tmp}/3ch.safetensors", False, "[12, 3, 4, 4]"),
    "convert: unwritable output": ("nnUNetv2_vismae_convert", "{tmp}/timm.pth {locked}/encoder.safetensors", False,
                                   "Cannot write {locked}/encoder.safetensors: {locked} is not writable."),
    "convert: channels 0": ("nnUNetv2_vismae_convert", "{tmp}/timm.pth {tmp}/e.safetensors --in-channels 0", False,
                            "--in-channels 0 must be a positive integer."),
    "demo: unwritable output": ("nnUNetv2_vismae_demo", "-o {locked}/demo", False,
                                "output folder {locked}/demo cannot be written: {locked} is not writable."),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """nnU-Net's folders and crafted checkpoints, written once for all cases."""
    root = tmp_path_factory.mktemp("cli_errors")
    env = nnunet_tree(root / "nnunet")
    three_d_checkpoint(root / "3d.safetensors")
    three_channel_checkpoint(root / "3ch.safetensors")
    torch.save({"patch_embed.proj.weight": torch.zeros(12, 3, 4, 4)}, root / "timm.pth")
    return root, env


@pytest.fixture
def world(files, tmp_path, monkeypatch):
    """nnU-Net's variables set, and ``locked``: an unwritable folder."""
    root, env = files
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {"tmp": str(root), "locked": str(tmp_path / "locked")}


def run_command(name: str, argv: list[str], capsys) -> tuple[int, str]:
    main = importlib.import_module(MAINS[name]).main
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_sentence_and_a_non_zero_exit(case, world, capsys, monkeypatch, tmp_path):
    command, arguments, without_env, expected = CASES[case]
    if without_env:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            monkeypatch.delenv(name)
    deny_write(tmp_path / "locked", monkeypatch)
    dataset = os.path.join(world["tmp"], "nnunet", "nnUNet_preprocessed", "Dataset001_Tiny")
    if "unwritable plans folder" in case:
        deny_write(Path(dataset), monkeypatch)
    try:
        code, err = run_command(command, [a.format(**world) for a in arguments.split()], capsys)
    finally:
        os.chmod(dataset, 0o755)  # shared with the other cases
    assert code not in (0, None), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected.format(**world) in err, err
    assert not os.path.exists(os.path.join(world["locked"], "demo"))


# ------------------------------------------------------------- inside nnUNetv2_train (our trainers)
def _trainer_stopping_at_initialize(reference: dict, monkeypatch):
    """A VisMAETrainer as nnUNetv2_train has it at initialize(): its network built from the plans."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunetv2_vismae.architectures import SwinUNet
    from nnunetv2_vismae.training import VisMAETrainer

    monkeypatch.setattr(nnUNetTrainer, "initialize", lambda self: None)  # nnU-Net's part: not under test
    monkeypatch.setenv("nnUNet_vismae_cpu_bf16", "0")
    trainer = object.__new__(VisMAETrainer)
    trainer.device, trainer.network = torch.device("cpu"), SwinUNet(1, 2, encoder=swin_encoder().config.to_json())
    trainer.print_to_log_file = lambda *a, **k: None
    monkeypatch.setattr(VisMAETrainer, "pretrained_reference", property(lambda self: reference))
    return trainer


@pytest.mark.parametrize("problem, expected", [
    ("replaced", "has content hash"),
    ("truncated", "is truncated"),
    ("3D", "'patch_embed.proj.weight' is [12, 1, 4, 4, 4]"),
    ("wrong embed dim", "does not fit the network"),
])
def test_trainer_stops_nnunetv2_train_with_one_sentence(problem, expected, tmp_path, monkeypatch):
    path = tmp_path / "encoder.safetensors"
    digest = write_checkpoint(path, swin_encoder())
    if problem == "replaced":
        write_checkpoint(path, swin_encoder(), {k: v + 1 for k, v in swin_encoder().state_dict().items()})
    elif problem == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif problem == "3D":
        digest = three_d_checkpoint(path)
    else:
        digest = write_checkpoint(path, swin_encoder(embed_dim=24, num_heads=(1, 2, 2, 4)))
    trainer = _trainer_stopping_at_initialize({"path": str(path), "content_hash": digest}, monkeypatch)
    with pytest.raises(SystemExit) as stop:
        trainer.initialize()
    message = str(stop.value.code)
    assert message.startswith("VisMAETrainer: ") and expected in message and "\n" not in message


@pytest.mark.parametrize("name", ["VisMAETrainer_labels0", "nnUNetTrainer_labels101_5epochs"])
def test_trainer_name_with_a_label_percentage_outside_1_to_100(name):
    from nnunetv2_vismae.training import variants

    with pytest.raises(SystemExit, match=r"label percentage must be between 1 and 100, got (0|101)\.$"):
        getattr(variants, name)
