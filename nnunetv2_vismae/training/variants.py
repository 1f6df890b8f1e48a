"""Trainer variants by name, in nnU-Net's style (the grammar of ``nnunetv2_vismae.trainer_names``).

``_labels25`` trains on a deterministic, nested 25% subset of the fold's training cases (written
to ``label_subset.json`` in the output folder; validation cases untouched), ``_labels25_seed1`` on
the one drawn with subset seed 1 (``_labels25`` is seed 0); ``_100epochs`` trains
100 epochs; ``_{M}iters`` sets the training iterations per epoch (validation iterations scale
with it), for quick runs; every variant redraws ``progress.png`` at most once a minute (and after the last
epoch). Classes are made on first use and
cached here, so the stock ``nnUNetv2_train`` / ``nnUNetv2_predict`` and pickling in worker
processes all resolve the same class through this module's ``__getattr__``.
"""

from __future__ import annotations

import math
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_vismae.device import DeviceError, apply_cpu_threads
from nnunetv2_vismae.label_subsets import LABEL_SUBSET_FILE, is_label_percentage, label_subset
from nnunetv2_vismae.trainer_names import parse_trainer_name
from nnunetv2_vismae.training import TRAINERS

OURS = {cls.__name__: cls for cls in TRAINERS}
BASES = {**OURS, nnUNetTrainer.__name__: nnUNetTrainer}
PROGRESS_PLOT_INTERVAL_S = 60.0


def parse_variant(name: str) -> tuple[type, dict] | None:
    """``"VisMAETrainer_5epochs_20iters"`` -> (VisMAETrainer, {"epochs": 5, "iters": 20}); else None."""
    parsed = parse_trainer_name(name)
    if parsed is None or parsed.base not in BASES or not parsed.suffixes():
        return None
    if parsed.labels is not None and not is_label_percentage(parsed.labels):
        # An unmistakable user error inside nnUNetv2_train's trainer lookup, which would otherwise
        # only say the trainer was not found: stop with one sentence (exit code 1, no traceback).
        raise SystemExit(f"Trainer {name}: the label percentage must be between 1 and 100, got {parsed.labels}.")
    return BASES[parsed.base], parsed.suffixes()


def make_variant(name: str) -> type:
    parsed = parse_variant(name)
    if parsed is None:
        raise AttributeError(name)
    base, settings = parsed

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        try:
            apply_cpu_threads(self.device)
        except DeviceError as e:  # inside nnUNetv2_train: one sentence, exit code 1, no traceback
            raise SystemExit(str(e)) from None
        if "epochs" in settings:
            self.num_epochs = settings["epochs"]
        if "iters" in settings:
            self.num_iterations_per_epoch = settings["iters"]
            self.num_val_iterations_per_epoch = max(1, settings["iters"] // 5)
        throttle_progress_plot(self)

    def do_split(self):
        train, val = base.do_split(self)
        if "labels" not in settings:
            return train, val
        seed = settings.get("seed", 0)
        subset = label_subset(train, settings["labels"], self.plans_manager.dataset_name, self.fold, seed)
        save_json(
            {"percent": settings["labels"], "seed": seed, "train": subset, "fold_train": sorted(train)},
            join(self.output_folder, LABEL_SUBSET_FILE),
        )
        self.print_to_log_file(
            f"Label subset: {len(subset)} of {len(train)} training cases ({settings['labels']}%, subset seed {seed})."
        )
        return subset, val

    cls = type(
        name, (base,), {"__init__": __init__, "do_split": do_split, "__module__": __name__, "__qualname__": name}
    )
    globals()[name] = cls
    return cls


def throttle_progress_plot(trainer, interval_s: float = PROGRESS_PLOT_INTERVAL_S, clock=time.monotonic) -> None:
    """nnU-Net redraws progress.png after every epoch: 1.7 s on one CPU thread, 7% of a 50-iteration
    epoch of its 2D network on 64-px phantoms. Redraw at most every ``interval_s``, and after the last epoch."""
    plot = trainer.logger.plot_progress_png
    last_plot = -math.inf

    def plot_progress_png(output_folder: str) -> None:
        nonlocal last_plot
        if trainer.current_epoch >= trainer.num_epochs - 1 or clock() - last_plot >= interval_s:
            plot(output_folder)
            last_plot = clock()

    trainer.logger.plot_progress_png = plot_progress_png


def trainer_class(name: str) -> type:
    """One of our trainers or a variant, by name, as nnU-Net's lookup asks for it (AttributeError for others)."""
    return OURS[name] if name in OURS else make_variant(name)


def __getattr__(name: str) -> type:
    return trainer_class(name)
