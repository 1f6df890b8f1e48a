"""A fake nnU-Net folder tree (dataset 990) with helpers to plant what nnU-Net leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunetv2_vismae.architectures import SwinEncoder
from nnunetv2_vismae.checkpoint import save_encoder_checkpoint
from nnunetv2_vismae.io.nnunet import make_folders
from tests.conftest import TINY_ENCODER, set_nnunet_folders

DATASET = "Dataset990_Synthetic"
LABELS = {"background": 0, "disc": 1, "square": 2}


@pytest.fixture
def fake_nnunet(tmp_path, monkeypatch) -> dict:
    """nnU-Net's three folders under tmp_path with env vars set; returns the paths."""
    folders = make_folders(tmp_path)
    set_nnunet_folders(monkeypatch, folders)
    paths = {variable.removeprefix("nnUNet_"): Path(folder) for variable, folder in folders.items()}
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    dataset = paths["preprocessed"] / DATASET
    dataset.mkdir()
    (dataset / "dataset.json").write_text(json.dumps({"labels": LABELS, "channel_names": {"0": "gray"}}))
    (dataset / "nnUNetPlans.json").write_text("{}")
    (paths["results"] / DATASET).mkdir()
    paths["dataset_results"] = paths["results"] / DATASET
    paths["pretrained"] = tmp_path / "encoder.safetensors"  # checked by the benchmark before anything runs
    encoder = SwinEncoder(**TINY_ENCODER)
    save_encoder_checkpoint(
        paths["pretrained"],
        encoder.state_dict(),
        {"family": "swin", "encoder_config": encoder.config.to_json(), "normalization": {"scheme": "zscore"}},
    )
    return paths


def fold_folder(results: Path, trainer: str, plans: str, fold, configuration: str = "2d") -> Path:
    folder = results / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_summary(
    folder: Path, disc: float, square: float, cases: dict | None = None, scored: str = "validation"
) -> Path:
    """validation/summary.json as nnU-Net writes it: per-case Dice (``cases``: case id -> (disc, square);
    default three cases of the given Dice, named after the fold), per-class means, foreground mean."""
    cases = cases or {f"{folder.name}_case{i}": (disc, square) for i in range(3)}
    per_case = [
        {
            "metrics": {"1": {"Dice": d}, "2": {"Dice": s}},
            "prediction_file": f"/pred/{case}.nii.gz",
            "reference_file": f"/gt/{case}.nii.gz",
        }
        for case, (d, s) in cases.items()
    ]
    means = [sum(v[i] for v in cases.values()) / len(cases) for i in (0, 1)]
    path = folder / scored / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "foreground_mean": {"Dice": sum(means) / 2},
                "mean": {"1": {"Dice": means[0]}, "2": {"Dice": means[1]}},
                "metric_per_case": per_case,
            },
            sort_keys=True,
            indent=4,
        )
    )
    return path
