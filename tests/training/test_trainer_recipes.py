"""Golden recipes of every trainer base: what its __init__ and configure_optimizers give (optimizer, its
settings, parameter groups, frozen tensors, the lr of every group in every epoch), pinned in
trainer_recipes.json, so that reshaping the trainer classes cannot change what they train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunetv2_vismae import training
from nnunetv2_vismae.training import cnn_trainers

from .test_frozen_trainers import tiny_cnn_network, tiny_swinunet
from .test_precision import CPU, built_trainer

GOLDEN = json.loads((Path(__file__).parent / "trainer_recipes.json").read_text())
EPOCHS = 20
OPTIMIZER_SETTINGS = ("lr", "weight_decay", "betas", "momentum", "nesterov", "fused")


def trainer_class(name: str) -> type:
    return getattr(training, name, None) or getattr(cnn_trainers, name)


def recipe(name: str, monkeypatch) -> dict:
    """The trainer built on a CPU for a tiny network of its family, its optimizer and schedule over EPOCHS."""
    monkeypatch.setattr(cnn_trainers, "refuse_swin_plans", lambda *args: None)
    trainer = built_trainer(monkeypatch, CPU, trainer_class(name))
    trainer.network = tiny_cnn_network() if name.startswith("nnUNetTrainerMAE") else tiny_swinunet()
    trainer.num_epochs = EPOCHS
    optimizer, scheduler = trainer.configure_optimizers()
    lrs = []
    for epoch in range(EPOCHS):
        scheduler.step(epoch)
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return {
        "flags": [trainer.load_pretrained, trainer.frozen_encoder],
        "optimizer": type(optimizer).__name__,
        "settings": {k: optimizer.defaults[k] for k in OPTIMIZER_SETTINGS if k in optimizer.defaults},
        "groups": [[g["encoder"], g["weight_decay"], g["lr_scale"], len(g["params"])] for g in optimizer.param_groups],
        "frozen_tensors": sum(not p.requires_grad for p in trainer.network.parameters()),
        "lrs": lrs,
    }


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_every_trainer_keeps_its_recipe(name, monkeypatch):
    got, want = json.loads(json.dumps(recipe(name, monkeypatch))), GOLDEN[name]
    assert got["flags"] == want["flags"] and got["optimizer"] == want["optimizer"]
    assert got["settings"] == want["settings"]  # the code's own constants
    assert [g[:1] + g[3:] for g in got["groups"]] == [g[:1] + g[3:] for g in want["groups"]]
    assert rows_close([g[1:3] for g in got["groups"]], [g[1:3] for g in want["groups"]])
    assert got["frozen_tensors"] == want["frozen_tensors"]
    assert rows_close(got["lrs"], want["lrs"])


def rows_close(got: list[list[float]], want: list[list[float]]) -> bool:
    return len(got) == len(want) and all(a == pytest.approx(b, rel=1e-6, abs=1e-12) for a, b in zip(got, want))
