"""Training on the embedded style task, predict from the saved model, linear mode, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nnunetv2_vismae.architectures import SwinEncoderConfig
from nnunetv2_vismae.checkpoint import read_encoder_checkpoint
from nnunetv2_vismae.classification.cli import main
from nnunetv2_vismae.classification.errors import ClassificationError
from nnunetv2_vismae.classification.model import SwinClassifier
from nnunetv2_vismae.classification.train import Run, TrainSettings, train
from nnunetv2_vismae.phantoms.classification_task import write_style_task
from tests.classification.conftest import TINY_FLAGS
from tests.conftest import TINY_ENCODER


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_args(style_task, out, epochs: int) -> list[str]:
    """The training command of the ``trained`` fixture; a rerun with other epochs is refused."""
    train, val = style_task["train"], style_task["test"]
    return [
        "train",
        "-i",
        str(train),
        "--val",
        str(val),
        "-o",
        str(out),
        "--epochs",
        str(epochs),
        "--lr",
        "2e-3",
        *TINY_FLAGS,
    ]


@pytest.fixture(scope="module")
def trained(style_task, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "style"
    assert main(train_args(style_task, out, epochs=10)) == 0
    return out


def test_short_run_on_the_style_task_reaches_auc_above_0_9(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["auc"] > 0.9, metrics
    assert metrics["classes"] == ["ct", "mr_t1", "mr_t2", "us"] and metrics["num_images"] == 32
    history = csv_rows(trained / "history.csv")
    best = max(history, key=lambda h: (float(h["val_auc"]), float(h["val_accuracy"]), -float(h["val_loss"])))
    assert metrics["best_epoch"] == int(best["epoch"])  # chosen on validation, not training loss
    for name in ("report.md", "confusion_matrix.png", "training_curve.png", "state.pt", "model/model.json"):
        assert (trained / name).is_file(), name
    description = json.loads((trained / "model" / "model.json").read_text())
    assert description["input"]["size"] == 32 and description["input"]["normalization"] == {"scheme": "zscore"}


def test_predict_reproduces_the_validation_metrics(trained, style_task, tmp_path):
    assert main(["predict", "-m", str(trained / "model"), "-i", str(style_task["test"]), "-o", str(tmp_path)]) == 0
    validation = json.loads((trained / "metrics.json").read_text())
    predicted = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("auc", "accuracy", "balanced_accuracy", "f1_macro"):
        assert predicted[key] == pytest.approx(validation[key]), key
    assert predicted["confusion_matrix"] == validation["confusion_matrix"]
    rows, val_rows = csv_rows(tmp_path / "predictions.csv"), csv_rows(trained / "validation_predictions.csv")
    assert [r["predicted"] for r in rows] == [r["predicted"] for r in val_rows]
    assert list(rows[0]) == ["image", "label", "p_ct", "p_mr_t1", "p_mr_t2", "p_us", "predicted"]


def test_rerunning_a_finished_run_trains_nothing_and_other_settings_are_refused(trained, style_task):
    state_before = (trained / "state.pt").stat().st_mtime_ns
    assert main(train_args(style_task, trained, epochs=10)) == 0
    assert (trained / "state.pt").stat().st_mtime_ns == state_before
    assert main(train_args(style_task, trained, epochs=11)) == 2


def tiny_settings(train_input, out, **kw) -> TrainSettings:
    return TrainSettings(train=str(train_input), out=str(out), size=32, batch_size=8, encoder=dict(TINY_ENCODER), **kw)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    task = write_style_task(tmp_path / "task", num_train=16, num_test=0, size=32)
    settings = tiny_settings(task["train"], tmp_path / "run", epochs=2, val_fraction=0.25)
    run = Run(settings, log=lambda *_: None)
    from tqdm import tqdm

    run.run_epoch(tqdm(disable=True))  # stopped after the first epoch
    first_epoch = run.history[0]
    train(settings, log=lambda *_: None)
    resumed = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["history"][0] == first_epoch


def test_linear_mode_leaves_the_encoder_unchanged(tiny_checkpoint, tmp_path):
    task = write_style_task(tmp_path / "task", num_train=16, num_test=8, size=32, image_format="png", layout="folders")
    settings = tiny_settings(
        task["train"], tmp_path / "linear", val=str(task["test"]), epochs=2, pretrained=tiny_checkpoint, mode="linear"
    )
    train(settings, log=lambda *_: None)
    saved = load_file(tmp_path / "linear" / "model" / "model.safetensors")
    pretrained = read_encoder_checkpoint(tiny_checkpoint).tensors
    assert all(torch.equal(saved[f"encoder.{name}"], value) for name, value in pretrained.items())
    torch.manual_seed(settings.seed)  # the head as training initialised it
    initial = SwinClassifier(SwinEncoderConfig.from_json(TINY_ENCODER), 4)
    assert not torch.equal(saved["head.weight"], initial.head.weight.detach())  # the head did train
    finetuned = tmp_path / "finetune"
    train(
        tiny_settings(task["train"], finetuned, val=str(task["test"]), epochs=1, pretrained=tiny_checkpoint),
        log=lambda *_: None,
    )
    changed = load_file(finetuned / "model" / "model.safetensors")
    assert not all(torch.equal(changed[f"encoder.{n}"], v) for n, v in pretrained.items())


def test_a_size_the_encoder_cannot_take_is_refused(tmp_path):
    task = write_style_task(tmp_path / "task", num_train=8, num_test=0, size=32)
    with pytest.raises(ClassificationError, match="--size 40 is not a multiple of the encoder's total stride 32"):
        train(TrainSettings(train=str(task["train"]), out=str(tmp_path / "o"), size=40, encoder=dict(TINY_ENCODER)))


def test_an_encoder_of_a_family_classification_does_not_build_on_is_one_sentence(tmp_path):
    from nnunetv2_vismae.classification.model import read_pretrained
    from tests.benchmark.test_cnn_arm import cnn_checkpoint

    path = cnn_checkpoint(tmp_path / "cnn.safetensors")
    with pytest.raises(ClassificationError, match=r"holds a cnn encoder; classification builds on swin encoders\.$"):
        read_pretrained(str(path))
