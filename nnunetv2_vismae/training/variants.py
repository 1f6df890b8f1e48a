"""Trainer variants by name, in nnU-Net's style: ``{Base}[_{N}epochs][_{M}iters]``.

``VisMAETrainer_100epochs`` trains 100 epochs; ``_{M}iters`` sets the training iterations per
epoch (validation iterations scale with it), for quick runs. Classes are made on first use and
cached here, so the stock ``nnUNetv2_train`` / ``nnUNetv2_predict`` and pickling in worker
processes all resolve the same class through this module's ``__getattr__``.
"""
from __future__ import annotations

import re

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_vismae.training.trainers import VisMAETrainer, VisMAETrainerScratch

BASES = {cls.__name__: cls for cls in (VisMAETrainer, VisMAETrainerScratch, nnUNetTrainer)}
_SUFFIXES = re.compile(r"^(?P<base>[A-Za-z]+?)(?:_(?P<epochs>\d+)epochs)?(?:_(?P<iters>\d+)iters)?$")


def parse_variant(name: str) -> tuple[type, dict] | None:
    """``"VisMAETrainer_5epochs_20iters"`` -> (VisMAETrainer, {"epochs": 5, "iters": 20}); else None."""
    match = _SUFFIXES.match(name)
    if match is None or match["base"] not in BASES or name in BASES:
        return None
    settings = {k: int(v) for k, v in match.groupdict().items() if k != "base" and v is not None}
    if not settings or any(v < 1 for v in settings.values()):
        return None
    return BASES[match["base"]], settings


def make_variant(name: str) -> type:
    parsed = parse_variant(name)
    if parsed is None:
        raise AttributeError(name)
    base, settings = parsed

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        if "epochs" in settings:
            self.num_epochs = settings["epochs"]
        if "iters" in settings:
            self.num_iterations_per_epoch = settings["iters"]
            self.num_val_iterations_per_epoch = max(1, settings["iters"] // 5)

    cls = type(name, (base,), {"__init__": __init__, "__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


def __getattr__(name: str) -> type:
    return make_variant(name)
