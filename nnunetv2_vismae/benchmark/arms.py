"""The arms of the label-efficiency benchmark, in one table.

An arm is a trainer base and the plans it trains with. Trainer names follow the variants in
``nnunetv2_vismae.training.variants``: ``{trainer}_labels{P}[_{E}epochs][_{M}iters]``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str  # the --arms value and the ``arm`` column of results.csv
    title: str  # how report.md and the plot call it
    trainer: str  # trainer base, before the variant suffixes
    plans: str  # plans identifier passed to nnUNetv2_train -p
    needs_pretrained: bool  # the arm fine-tunes the checkpoint of its family (--pretrained / --pretrained-cnn)
    derived_plans: bool  # the plans are written by nnUNetv2_vismae_plan (not by nnU-Net)
    family: str | None = None  # encoder family of the checkpoint its derived plans are planned from


REFERENCE_ARM = "nnunet"  # vanilla nnU-Net; its 100% run is what the other arms must match
HEADLINE_ARM = "vismae"

ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("nnunet", "nnU-Net", "nnUNetTrainer", "nnUNetPlans", needs_pretrained=False, derived_plans=False),
    Arm("cnn-mae", "nnU-Net + CNN MAE", "nnUNetTrainerMAE", "nnUNetMAEPlans", needs_pretrained=True,
        derived_plans=True, family="cnn"),
    Arm("vismae", "VisMAE", "VisMAETrainer", "nnUNetVisMAEPlans", needs_pretrained=True, derived_plans=True,
        family="swin"),
    Arm("scratch", "VisMAE from scratch", "VisMAETrainerScratch", "nnUNetVisMAEPlans", needs_pretrained=False,
        derived_plans=True, family="swin"),
)}
# Without --arms: every arm whose checkpoint was given (cnn-mae needs --pretrained-cnn).
PRETRAINED_FLAGS = {"swin": "--pretrained", "cnn": "--pretrained-cnn"}


def default_arms(cnn_checkpoint_given: bool) -> list[str]:
    return [name for name, arm in ARMS.items() if arm.family != "cnn" or cnn_checkpoint_given]


def trainer_name(arm: Arm, labels: int, epochs: int | None = None, iters: int | None = None) -> str:
    """``VisMAETrainer`` at 25% with 5 epochs -> ``VisMAETrainer_labels25_5epochs``."""
    name = f"{arm.trainer}_labels{labels}"
    if epochs is not None:
        name += f"_{epochs}epochs"
    if iters is not None:
        name += f"_{iters}iters"
    return name
