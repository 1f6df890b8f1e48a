"""Output folders of every command: one writer per folder, a full disk, folders that cannot be written
and saved models that cannot be read end in one sentence naming the file and a non-zero exit, with
nothing lost. Commands run in this process through their ``main``."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from nnunetv2_vismae.io.lock import LOCK_FILE
from tests.conftest import TINY_ENCODER, set_nnunet_folders
from tests.reliability import LockHolder, deny_write, nnunet_tree

FULL_DISK = "No space left on device"


def one_sentence(main, argv, capsys) -> tuple[int, str]:
    """Exit code and the error line of a command that must fail with one sentence."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return code, err


# ------------------------------------------------------------------------------- one writer
@pytest.mark.parametrize("command", ["pretrain", "classify train"])
def test_a_second_run_into_a_folder_in_use_is_refused(command, tmp_path, capsys):
    from nnunetv2_vismae.classification.cli import main as classify
    from pretrain.cli import main as pretrain

    out = tmp_path / "out"
    holder = LockHolder(out)
    try:
        if command == "pretrain":  # refused before its data is even looked at
            code, err = one_sentence(pretrain, ["-i", str(tmp_path / "none"), "-o", str(out), "-device", "cpu"], capsys)
        else:
            code, err = one_sentence(classify, ["train", "-i", str(tmp_path / "none.csv"), "-o", str(out)], capsys)
        assert f"Output folder {out} is in use by nnUNetv2_vismae_pretrain (pid {holder.pid} on host" in err
        assert f"delete {out / LOCK_FILE}" in err
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # the holder's lock is untouched
    finally:
        holder.kill()


# ---------------------------------------------------------------- classification's -o
@pytest.mark.parametrize("subcommand", ["train", "predict", "example"])
@pytest.mark.parametrize("problem", ["file", "read-only"])
def test_classification_output_that_cannot_be_written_is_refused_before_any_image_is_read(
    subcommand, problem, tmp_path, monkeypatch, capsys
):
    from nnunetv2_vismae.classification.cli import main

    out = tmp_path / "out"
    if problem == "file":
        out.write_text("a file")
        expected = f"Output folder {out} cannot be written: {out} is not a folder."
    else:
        deny_write(out, monkeypatch)
        expected = f"Output folder {out} cannot be written: {out} is not writable."
    missing = str(tmp_path / "never_read.csv")  # read first, this would be the error
    argv = {
        "train": ["train", "-i", missing, "-o", str(out)],
        "predict": ["predict", "-m", str(tmp_path / "model"), "-i", missing, "-o", str(out)],
        "example": ["example", "-o", str(out)],
    }[subcommand]
    code, err = one_sentence(main, argv, capsys)
    assert err == f"nnUNetv2_vismae_classify: error: {expected}"


# ---------------------------------------------------------------- predict's saved model
@pytest.fixture
def model_folder(tmp_path) -> Path:
    from nnunetv2_vismae.architectures import SwinEncoderConfig
    from nnunetv2_vismae.classification.inputs import InputSpec
    from nnunetv2_vismae.classification.model import SwinClassifier, save_model_folder

    config = SwinEncoderConfig.from_json(TINY_ENCODER)
    folder = tmp_path / "model"
    save_model_folder(
        folder,
        SwinClassifier(config, 2),
        {
            "classes": ["a", "b"],
            "input": InputSpec(32, 1, {"scheme": "zscore"}).to_json(),
            "encoder_config": config.to_json(),
        },
    )
    return folder


def _break(folder: Path, how: str) -> str:
    """Damage the saved model; the part of the sentence that names what is wrong."""
    weights, description = folder / "model.safetensors", folder / "model.json"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-100])
        return f"{weights} cannot be read: it is truncated or not a safetensors file"
    if how == "other weights":
        safetensors.torch.save_file({"head.weight": torch.zeros(2, 3)}, weights)
        return f"{weights} does not hold the model that {description} describes"
    content = json.loads(description.read_text())
    if how == "cut json":
        description.write_text(json.dumps(content)[:40])
        return f"{description} cannot be read as JSON"
    if how == "no classes":
        del content["classes"]
        description.write_text(json.dumps(content))
        return f"{description} has no 'classes' entry"
    content["encoder_config"] = "big"
    description.write_text(json.dumps(content))
    return f"{description}: 'encoder_config' is not a valid entry"


@pytest.mark.parametrize("how", ["truncated weights", "other weights", "cut json", "no classes", "bad config"])
def test_predict_with_a_damaged_model_is_one_sentence_naming_the_file(how, model_folder, tmp_path, capsys):
    from nnunetv2_vismae.classification.cli import main

    expected = _break(model_folder, how)
    code, err = one_sentence(
        main, ["predict", "-m", str(model_folder), "-i", str(tmp_path), "-o", str(tmp_path / "predictions")], capsys
    )
    assert expected in err, err
    assert not (tmp_path / "predictions").exists()


# ------------------------------------------------------------------------------- convert
@pytest.fixture
def timm_weights(tmp_path) -> Path:
    path = tmp_path / "source" / "swin.pth"
    path.parent.mkdir()
    return save_timm_swin(path)


def save_timm_swin(path: Path) -> Path:
    """A tiny timm Swin Transformer's state dict, as convert takes it."""
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(
        img_size=224,
        patch_size=4,
        in_chans=3,
        embed_dim=12,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 2),
        window_size=7,
        num_classes=2,
    )
    torch.save(model.state_dict(), path)
    return path


def test_convert_to_an_existing_folder_names_the_file_to_give(timm_weights, tmp_path, capsys):
    from nnunetv2_vismae.checkpoint.convert import main

    (tmp_path / "out").mkdir()
    code, err = one_sentence(main, [str(timm_weights), str(tmp_path / "out")], capsys)
    assert (
        f"Output {tmp_path / 'out'} is a folder; give the checkpoint file to write, e.g. "
        f"{tmp_path / 'out' / 'encoder.safetensors'}." in err
    )
    assert not os.listdir(tmp_path / "out")


def test_convert_on_a_full_disk_is_one_sentence_and_leaves_nothing(timm_weights, tmp_path, monkeypatch, capsys):
    from nnunetv2_vismae.checkpoint.convert import main

    def full_disk(tensors, path, *args, **kwargs):  # as safetensors reports ENOSPC
        Path(path).write_bytes(b"half")
        raise SafetensorError(f"Error while serializing: I/O error: {FULL_DISK} (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    (tmp_path / "out").mkdir()
    code, err = one_sentence(main, [str(timm_weights), str(tmp_path / "out" / "encoder.safetensors")], capsys)
    assert f"Cannot write checkpoint {tmp_path / 'out' / 'encoder.safetensors'}: {FULL_DISK}" in err, err
    assert not os.listdir(tmp_path / "out")


# ---------------------------------------------------------------------------------- plan
def test_plan_on_a_full_disk_is_one_sentence_and_leaves_no_partial_plans(tmp_path, monkeypatch, capsys):
    from nnunetv2_vismae.planning.cli import main

    set_nnunet_folders(monkeypatch, nnunet_tree(tmp_path / "nnunet"))
    dataset = tmp_path / "nnunet" / "nnUNet_preprocessed" / "Dataset001_Tiny"
    plans = json.loads((dataset / "nnUNetPlans.json").read_text())
    plans["configurations"]["2d"]["batch_size"] = 2
    (dataset / "nnUNetPlans.json").write_text(json.dumps(plans))
    before = sorted(os.listdir(dataset))

    def full_disk(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    code, err = one_sentence(main, ["-d", "1"], capsys)
    assert err == f"nnUNetv2_vismae_plan: error: Cannot write {dataset / 'nnUNetVisMAEPlans.json'}: {FULL_DISK}."
    assert sorted(os.listdir(dataset)) == before


# ------------------------------------------------------------- an -o that cannot be created
# every console script's command line with OUT as its output (None: it has no -o); OUT is a folder that passes the
# permission check but cannot be made (/proc refuses new entries even to root) or whose name is too long to check
OUTPUT_ARGUMENTS = {
    "nnUNetv2_vismae_env": None,
    "nnUNetv2_vismae_inspect": None,
    "nnUNetv2_vismae_plan": ["-d", "1", "-o", "OUT"],
    "nnUNetv2_vismae_convert": ["{tmp}/timm.pth", "OUT/encoder.safetensors"],
    "nnUNetv2_vismae_pretrain": ["-i", "{tmp}/images", "-o", "OUT", "-device", "cpu", "--steps", "1"],
    "nnUNetv2_vismae_pack": ["-i", "{tmp}/images", "-o", "OUT", "-np", "1"],
    "nnUNetv2_vismae_benchmark": ["-d", "1", "--arms", "nnunet", "-f", "0", "-o", "OUT"],
    "nnUNetv2_vismae_demo": ["-o", "OUT"],
    "nnUNetv2_vismae_speed": ["-o", "OUT"],
    "nnUNetv2_vismae_classify": ["example", "-o", "OUT"],
}
UNCREATABLE = {"in /proc": "/proc/forbidden", "name too long": "{tmp}/" + "a" * 300}


def console_scripts() -> dict[str, str]:
    import tomllib

    return tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_is_tried_with_an_uncreatable_output():
    assert set(OUTPUT_ARGUMENTS) == set(console_scripts())


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    """An image folder, timm-shaped weights and nnU-Net's folders with Dataset001_Tiny."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("uncreatable")
    (root / "images").mkdir()
    Image.fromarray(np.arange(1600, dtype=np.uint8).reshape(40, 40)).save(root / "images" / "image.png")
    save_timm_swin(root / "timm.pth")
    return root, nnunet_tree(root / "nnunet")


# fixed in other areas of #29: benchmark/ makes its -o, and convert its output's folder, with a bare mkdir after the
# permission check (io.folders.make_output_folder is the fix); convert stats the too-long name before checking it
NOT_YET: set[tuple[str, str]] = set()  # (command, where) cases known to fail, marked strict xfail


@pytest.mark.parametrize(
    "command, where",
    [
        pytest.param(name, where, marks=[pytest.mark.xfail(strict=True)] if (name, where) in NOT_YET else [])
        for name, argv in OUTPUT_ARGUMENTS.items()
        if argv is not None
        for where in UNCREATABLE
    ],
)
def test_an_output_folder_that_cannot_be_created_is_one_sentence(command, where, small_inputs, monkeypatch, capsys):
    import importlib

    if where == "in /proc" and not os.path.isdir("/proc"):
        pytest.skip("no /proc on this system")
    root, env = small_inputs
    set_nnunet_folders(monkeypatch, env)
    out = UNCREATABLE[where].format(tmp=root)
    argv = [a.replace("OUT", out).format(tmp=root) for a in OUTPUT_ARGUMENTS[command]]
    module, function = console_scripts()[command].split(":")
    code, err = one_sentence(getattr(importlib.import_module(module), function), argv, capsys)
    assert code == 2 and err.startswith(f"{command}: error: ") and out in err, err
    assert not os.path.exists(out)
