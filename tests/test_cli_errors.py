"""Every command's user errors: one line ``PROG: error: <sentence>`` naming the value and what was
expected, exit status 2, no traceback. Commands run in this process through their ``main`` (the
console scripts' code); every console script in pyproject.toml is here."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import set_nnunet_folders
from tests.reliability import (
    deny_write,
    nnunet_tree,
    plans_reference,
    swin_encoder,
    three_channel_checkpoint,
    three_d_checkpoint,
    write_checkpoint,
)

MAINS = {
    "nnUNetv2_vismae_env": "nnunetv2_vismae.env",
    "nnUNetv2_vismae_pretrain": "pretrain.cli",
    "nnUNetv2_vismae_pack": "pretrain.pack_cli",
    "nnUNetv2_vismae_plan": "nnunetv2_vismae.planning.cli",
    "nnUNetv2_vismae_benchmark": "nnunetv2_vismae.benchmark.cli",
    "nnUNetv2_vismae_inspect": "nnunetv2_vismae.checkpoint.cli",
    "nnUNetv2_vismae_convert": "nnunetv2_vismae.checkpoint.convert",
    "nnUNetv2_vismae_demo": "nnunetv2_vismae.demo.cli",
    "nnUNetv2_vismae_classify": "nnunetv2_vismae.classification.cli",
    "nnUNetv2_vismae_speed": "nnunetv2_vismae.speed.cli",
}
# (command, arguments, environment without nnU-Net's variables?, expected part of the sentence)
CASES = {
    "env: unknown flag": ("nnUNetv2_vismae_env", "--bogus", False, "Unrecognized arguments: --bogus."),
    "pretrain: no nnUNet_preprocessed": ("nnUNetv2_vismae_pretrain", "-d 1 -o {tmp}/out", True, "nnUNet_preprocessed"),
    "pretrain: unknown dataset": (
        "nnUNetv2_vismae_pretrain",
        "-d 7 -o {tmp}/out",
        False,
        "Found no dataset folder for dataset 7",
    ),
    "pretrain: plans without 2d": (
        "nnUNetv2_vismae_pretrain",
        "-d 2 -o {tmp}/out",
        False,
        "Configuration 2d is not in",
    ),
    "pretrain: unwritable output": (
        "nnUNetv2_vismae_pretrain",
        "-d 1 -o {locked}",
        False,
        "Output folder {locked} cannot be written: {locked} is not writable.",
    ),
    "pretrain: bad --max-unusable": (
        "nnUNetv2_vismae_pretrain",
        "-d 1 -o {tmp}/out --max-unusable 2",
        False,
        "--max-unusable is a share between 0 and 1, got 2.0.",
    ),
    "pretrain: bad --max-bad-steps": (
        "nnUNetv2_vismae_pretrain",
        "-d 1 -o {tmp}/out --max-bad-steps 0",
        False,
        "--max-bad-steps must be at least 1, got 0.",
    ),
    "pack: missing input folder": (
        "nnUNetv2_vismae_pack",
        "-i {tmp}/nowhere -o {tmp}/pack -np 1",
        False,
        "Input folder {tmp}/nowhere does not exist or is not a folder.",
    ),
    "pack: unwritable output": (
        "nnUNetv2_vismae_pack",
        "--file-list {tmp}/images.txt -o {locked}/pack -np 1",
        False,
        "Output folder {locked}/pack cannot be written: {locked} is not writable.",
    ),
    "plan: no nnUNet_preprocessed": ("nnUNetv2_vismae_plan", "-d 1", True, "nnUNet_preprocessed is not set"),
    "plan: unknown dataset": ("nnUNetv2_vismae_plan", "-d 7", False, "Found no dataset folder for dataset 7"),
    "plan: plans without 2d": ("nnUNetv2_vismae_plan", "-d 2", False, "has no '2d' configuration"),
    "plan: 3D checkpoint": (
        "nnUNetv2_vismae_plan",
        "-d 1 --pretrained {tmp}/3d.safetensors",
        False,
        "'patch_embed.proj.weight' is [12, 1, 4, 4, 4], expected [12, 1, 4, 4]",
    ),
    "plan: wrong channel count": (
        "nnUNetv2_vismae_plan",
        "-d 1 --pretrained {tmp}/3ch.safetensors",
        False,
        "'patch_embed.proj.weight' is [12, 3, 4, 4], expected [12, 1, 4, 4]",
    ),
    "plan: unwritable plans folder": ("nnUNetv2_vismae_plan", "-d 1", False, "Dataset001_Tiny is not writable."),
    "benchmark: no nnUNet_results": ("nnUNetv2_vismae_benchmark", "-d 1", True, "nnUNet_preprocessed is not set"),
    "benchmark: unknown dataset": ("nnUNetv2_vismae_benchmark", "-d 7", False, "Found no dataset folder for dataset 7"),
    "benchmark: plans without 2d": (
        "nnUNetv2_vismae_benchmark",
        "-d 2 --arms nnunet scratch -f 0",
        False,
        "has no '2d' configuration (it has ['3d_fullres'])",
    ),
    "benchmark: labels 0": (
        "nnUNetv2_vismae_benchmark",
        "-d 1 --labels 0 50",
        False,
        "--labels must be percentages between 1 and 100, got 0.",
    ),
    "benchmark: labels 101": ("nnUNetv2_vismae_benchmark", "-d 1 --labels 101", False, "got 101."),
    "benchmark: missing checkpoint": (
        "nnUNetv2_vismae_benchmark",
        "-d 1 --pretrained {tmp}/none.safetensors",
        False,
        "The pretrained checkpoint {tmp}/none.safetensors does not exist.",
    ),
    "benchmark: unwritable output": (
        "nnUNetv2_vismae_benchmark",
        "-d 1 --arms nnunet -f 0 -o {locked}/bench",
        False,
        "Output folder {locked}/bench cannot be written: {locked} is not writable.",
    ),
    "inspect: 3D checkpoint": ("nnUNetv2_vismae_inspect", "{tmp}/3d.safetensors", False, "of wrong shape"),
    "inspect: wrong channel count": ("nnUNetv2_vismae_inspect", "{tmp}/3ch.safetensors", False, "[12, 3, 4, 4]"),
    "convert: unwritable output": (
        "nnUNetv2_vismae_convert",
        "{tmp}/timm.pth {locked}/encoder.safetensors",
        False,
        "Cannot write {locked}/encoder.safetensors: {locked} is not writable.",
    ),
    "convert: channels 0": (
        "nnUNetv2_vismae_convert",
        "{tmp}/timm.pth {tmp}/e.safetensors --in-channels 0",
        False,
        "--in-channels 0 must be a positive integer.",
    ),
    "demo: unwritable output": (
        "nnUNetv2_vismae_demo",
        "-o {locked}/demo",
        False,
        "Output folder {locked}/demo cannot be written: {locked} is not writable.",
    ),
    "classify: predict without a model": (
        "nnUNetv2_vismae_classify",
        "predict -m {tmp}/no_model -i {tmp} -o {tmp}/predictions",
        False,
        "{tmp}/no_model is not a saved classification model",
    ),
    "speed: unwritable output": (
        "nnUNetv2_vismae_speed",
        "-o {locked}/speed",
        False,
        "Output folder {locked}/speed cannot be written: {locked} is not writable.",
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """nnU-Net's folders and crafted checkpoints, written once for all cases."""
    root = tmp_path_factory.mktemp("cli_errors")
    env = nnunet_tree(root / "nnunet")
    three_d_checkpoint(root / "3d.safetensors")
    three_channel_checkpoint(root / "3ch.safetensors")
    torch.save({"patch_embed.proj.weight": torch.zeros(12, 3, 4, 4)}, root / "timm.pth")
    Image.fromarray(np.arange(1600, dtype=np.uint8).reshape(40, 40)).save(root / "image.png")
    (root / "images.txt").write_text("image.png\n")
    return root, env


@pytest.fixture
def world(files, tmp_path, monkeypatch):
    """nnU-Net's variables set, and ``locked``: an unwritable folder."""
    root, env = files
    set_nnunet_folders(monkeypatch, env)
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
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"{command}: error: ") and "Traceback" not in err, err
    assert expected.format(**world) in err, err
    assert not os.path.exists(os.path.join(world["locked"], "demo"))


def test_every_console_script_is_covered():
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert {name: target.split(":")[0] for name, target in scripts.items()} == MAINS
    assert set(MAINS) == {command for command, *_ in CASES.values()}


def test_a_failed_step_exits_1_ctrl_c_130_and_a_bug_keeps_its_traceback(capsys):
    from nnunetv2_vismae.errors import StepFailed
    from nnunetv2_vismae.flags import console_script

    def command_raising(error, resumes=False):
        @console_script("prog", resumes)
        def main(argv=None):
            raise error

        return main

    assert command_raising(StepFailed("Run x failed (exit 3); its output is in x.log"))() == 1
    assert capsys.readouterr().err == "prog: error: Run x failed (exit 3); its output is in x.log\n"
    assert command_raising(KeyboardInterrupt())() == 130
    assert command_raising(KeyboardInterrupt(), resumes=True)([]) == 130
    assert capsys.readouterr().err == "prog: interrupted.\nprog: interrupted; run the same command again to resume.\n"
    with pytest.raises(ZeroDivisionError):  # a bug: Python prints the traceback
        command_raising(ZeroDivisionError("division by zero"))()


# (command, flag, sentence): a value out of range stops the command while its flags are parsed
BAD_FLAGS = {
    "pretrain --window 0": ("nnUNetv2_vismae_pretrain", "--window 0", "--window must be at least 1, got 0."),
    "pretrain --embed-dim 0": ("nnUNetv2_vismae_pretrain", "--embed-dim 0", "--embed-dim must be at least 1, got 0."),
    "pretrain --encoder-patch 0": (
        "nnUNetv2_vismae_pretrain",
        "--encoder-patch 0",
        "--encoder-patch must be at least 1, got 0.",
    ),
    "pretrain --heads 0": ("nnUNetv2_vismae_pretrain", "--heads 0 6", "--heads must be at least 1, got 0."),
    "pretrain --lr -1": ("nnUNetv2_vismae_pretrain", "--lr -1", "--lr must be a positive number, got -1."),
    "classify --epochs 0": ("nnUNetv2_vismae_classify", "--epochs 0", "--epochs must be at least 1, got 0."),
    "classify --batch-size 0": (
        "nnUNetv2_vismae_classify",
        "--batch-size 0",
        "--batch-size must be at least 1, got 0.",
    ),
    "classify --size 0": ("nnUNetv2_vismae_classify", "--size 0", "--size must be at least 1, got 0."),
    "classify --epochs x": ("nnUNetv2_vismae_classify", "--epochs x", "--epochs must be an integer, got x."),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Usable inputs for both commands: a folder of PNGs and the phantom classification task's CSV."""
    from nnunetv2_vismae.phantoms.classification_task import write_style_task

    root = tmp_path_factory.mktemp("bad_flags")
    (root / "images").mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 40), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
    task = write_style_task(str(root / "task"), 8, 0, 32, 0, "png", "csv")
    return {
        "nnUNetv2_vismae_pretrain": ["-i", str(root / "images"), "-device", "cpu", "--workers", "0"],
        "nnUNetv2_vismae_classify": ["train", "-i", str(task["train"])],
    }


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_flags_out_of_range_stop_before_anything_is_written(case, inputs, tmp_path, capsys):
    command, flag, expected = BAD_FLAGS[case]
    out = tmp_path / "out"
    code, err = run_command(command, [*inputs[command], "-o", str(out), *flag.split()], capsys)
    assert code == 2 and err == f"{command}: error: {expected}", err
    assert not out.exists()


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


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("replaced", "has content hash"),
        ("truncated", "is truncated"),
        ("3D", "'patch_embed.proj.weight' is [12, 1, 4, 4, 4]"),
        ("wrong embed dim", "does not fit the network"),
    ],
)
def test_trainer_stops_nnunetv2_train_with_one_sentence(problem, expected, tmp_path, monkeypatch):
    path = tmp_path / "encoder.safetensors"
    write_checkpoint(path, swin_encoder())
    reference = plans_reference(path)
    if problem == "replaced":
        write_checkpoint(path, swin_encoder(), {k: v + 1 for k, v in swin_encoder().state_dict().items()})
    elif problem == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif problem == "3D":
        three_d_checkpoint(path)
    else:
        write_checkpoint(path, swin_encoder(embed_dim=24, num_heads=(1, 2, 2, 4)))
        reference = plans_reference(path)
    trainer = _trainer_stopping_at_initialize(reference, monkeypatch)
    with pytest.raises(SystemExit) as stop:
        trainer.initialize()
    message = str(stop.value.code)
    assert message.startswith("VisMAETrainer: ") and expected in message and "\n" not in message


@pytest.mark.parametrize("name", ["VisMAETrainer_labels0", "nnUNetTrainer_labels101_5epochs"])
def test_trainer_name_with_a_label_percentage_outside_1_to_100(name):
    from nnunetv2_vismae.training import variants

    with pytest.raises(SystemExit, match=r"label percentage must be between 1 and 100, got (0|101)\.$"):
        getattr(variants, name)


def _plans_and_dataset(files, network: str | None = None) -> tuple[dict, dict]:
    """Dataset001_Tiny's plans as nnUNetv2_train hands them to a trainer (``network`` swapped in)."""
    import json

    root, env = files
    plans = json.loads((Path(env["nnUNet_preprocessed"]) / "Dataset001_Tiny" / "nnUNetPlans.json").read_text())
    if network is not None:
        plans["configurations"]["2d"]["architecture"]["network_class_name"] = network
    return {**plans, "continue_training": False}, {
        "channel_names": {"0": "gray"},
        "labels": {"background": 0, "a": 1},
        "numTraining": 2,
        "file_ending": ".png",
    }


@pytest.mark.parametrize("trainer", ["VisMAETrainer", "nnUNetTrainerMAE"])
def test_trainer_without_nnunet_results_stops_with_one_sentence(trainer, files, world, monkeypatch):
    from nnunetv2_vismae.training import VisMAETrainer
    from nnunetv2_vismae.training.cnn_trainers import nnUNetTrainerMAE

    monkeypatch.delenv("nnUNet_results")
    cls = {"VisMAETrainer": VisMAETrainer, "nnUNetTrainerMAE": nnUNetTrainerMAE}[trainer]
    plans, dataset_json = _plans_and_dataset(files)
    with pytest.raises(SystemExit) as stop:
        cls(plans, "2d", 0, dataset_json, torch.device("cpu"))
    assert str(stop.value.code) == (
        f"{trainer}: the environment variable nnUNet_results is not set; nnUNetv2_train "
        "needs it for the folder the trained model is written to "
        "(export nnUNet_results=/path/to/nnUNet_results)."
    )


def test_cnn_trainer_on_swin_plans_stops_with_one_sentence_and_writes_nothing(files, world):
    from nnunetv2_vismae.training.cnn_trainers import nnUNetTrainerMAE

    plans, dataset_json = _plans_and_dataset(files, "nnunetv2_vismae.architectures.SwinUNet")
    results = Path(files[1]["nnUNet_results"])
    before = sorted(results.rglob("*"))
    with pytest.raises(SystemExit) as stop:
        nnUNetTrainerMAE(plans, "2d", 0, dataset_json, torch.device("cpu"))
    message = str(stop.value.code)
    assert (
        message.startswith(
            "nnUNetTrainerMAE: the plans nnUNetPlans name nnunetv2_vismae.architectures.SwinUNet, "
            "which VisMAETrainer trains;"
        )
        and "-p nnUNetMAEPlans" in message
        and "\n" not in message
    )
    assert sorted(results.rglob("*")) == before
