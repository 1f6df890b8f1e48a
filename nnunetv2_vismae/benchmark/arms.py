"""The arms of the label-efficiency benchmark, in one table.

An arm is a trainer base and the plans it trains with. Trainer names follow the grammar of
``nnunetv2_vismae.trainer_names``: ``{trainer}_labels{P}[_seed{S}][_{E}epochs][_{M}iters]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunetv2_vismae.trainer_names import TrainerName


@dataclass(frozen=True)
class Arm:
    name: str  # the --arms value and the ``arm`` column of results.csv
    title: str  # how report.md and the plot call it
    trainer: str  # trainer base, before the variant suffixes
    plans: str  # plans identifier passed to nnUNetv2_train -p
    needs_pretrained: bool  # the arm fine-tunes the checkpoint of its family (--pretrained / --pretrained-cnn)
    derived_plans: bool  # the plans are written by nnUNetv2_vismae_plan (not by nnU-Net)
    family: str | None = None  # encoder family of the checkpoint its derived plans are planned from
    twin: str | None = None  # the same network and recipe from random weights (pretrained arms only)
    ablation: bool = False  # a recipe variant, run only when --arms names it
    probe: bool = False  # a frozen-encoder probe arm (--probe or --arms), reported apart from the verdict


REFERENCE_ARM = "nnunet"  # vanilla nnU-Net; its 100% run is what the other arms must match
REFERENCE_LABELS = 100

ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("nnunet", "nnU-Net", "nnUNetTrainer", "nnUNetPlans", needs_pretrained=False, derived_plans=False),
        Arm(
            "vismae",
            "VisMAE",
            "VisMAETrainer",
            "nnUNetVisMAEPlans",
            needs_pretrained=True,
            derived_plans=True,
            family="swin",
            twin="scratch",
        ),
        Arm(
            "scratch",
            "VisMAE from scratch",
            "VisMAETrainerScratch",
            "nnUNetVisMAEPlans",
            needs_pretrained=False,
            derived_plans=True,
            family="swin",
        ),
        Arm(
            "cnn-mae",
            "nnU-Net + CNN MAE",
            "nnUNetTrainerMAE",
            "nnUNetMAEPlans",
            needs_pretrained=True,
            derived_plans=True,
            family="cnn",
            twin="cnn-scratch",
        ),
        Arm(
            "cnn-scratch",
            "CNN MAE recipe from scratch",
            "nnUNetTrainerMAEScratch",
            "nnUNetMAEPlans",
            needs_pretrained=False,
            derived_plans=True,
            family="cnn",
        ),
        # ablations of the recipes, each with its twin
        Arm(
            "vismae-llrd",
            "VisMAE, layer-wise lr decay",
            "VisMAETrainerLLRD",
            "nnUNetVisMAEPlans",
            needs_pretrained=True,
            derived_plans=True,
            family="swin",
            twin="scratch",
            ablation=True,
        ),
        Arm(
            "cnn-mae-lowlr",
            "nnU-Net + CNN MAE, peak lr 1e-3",
            "nnUNetTrainerMAELowLR",
            "nnUNetMAEPlans",
            needs_pretrained=True,
            derived_plans=True,
            family="cnn",
            twin="cnn-scratch-lowlr",
            ablation=True,
        ),
        Arm(
            "cnn-scratch-lowlr",
            "CNN MAE recipe from scratch, peak lr 1e-3",
            "nnUNetTrainerMAEScratchLowLR",
            "nnUNetMAEPlans",
            needs_pretrained=False,
            derived_plans=True,
            family="cnn",
            ablation=True,
        ),
        # the frozen-encoder probe: what pretraining learned, the encoder fixed and only the decoder trained
        Arm(
            "vismae-frozen",
            "VisMAE, frozen encoder",
            "VisMAETrainerFrozen",
            "nnUNetVisMAEPlans",
            needs_pretrained=True,
            derived_plans=True,
            family="swin",
            twin="vismae-frozen-random",
            probe=True,
        ),
        Arm(
            "vismae-frozen-random",
            "VisMAE, frozen random encoder",
            "VisMAETrainerFrozenScratch",
            "nnUNetVisMAEPlans",
            needs_pretrained=False,
            derived_plans=True,
            family="swin",
            probe=True,
        ),
        Arm(
            "cnn-mae-frozen",
            "nnU-Net + CNN MAE, frozen encoder",
            "nnUNetTrainerMAEFrozen",
            "nnUNetMAEPlans",
            needs_pretrained=True,
            derived_plans=True,
            family="cnn",
            twin="cnn-frozen-random",
            probe=True,
        ),
        Arm(
            "cnn-frozen-random",
            "CNN MAE recipe, frozen random encoder",
            "nnUNetTrainerMAEFrozenScratch",
            "nnUNetMAEPlans",
            needs_pretrained=False,
            derived_plans=True,
            family="cnn",
            probe=True,
        ),
    )
}
PRETRAINED_FLAGS = {"swin": "--pretrained", "cnn": "--pretrained-cnn"}
# Plans of these families can only be derived from a checkpoint (nnUNetMAEPlans copy the network it fits).
PLANNED_FROM_CHECKPOINT_ONLY = {"cnn"}


def default_arms(given_families: set[str]) -> list[str]:
    """Every arm whose inputs are given: vismae with a swin checkpoint, both cnn arms with a cnn one."""
    return [
        name
        for name, arm in ARMS.items()
        if not (arm.ablation or arm.probe)
        and (arm.family in given_families or not (arm.needs_pretrained or arm.family in PLANNED_FROM_CHECKPOINT_ONLY))
    ]


def probe_arms(given_families: set[str]) -> list[str]:
    """The frozen-encoder probe arms (pretrained and random twin) of every family whose checkpoint is given."""
    return [name for name, arm in ARMS.items() if arm.probe and arm.family in given_families]


def is_probe(arm: str) -> bool:
    return arm in ARMS and ARMS[arm].probe


def trainer_name(arm: Arm, labels: int, epochs: int | None = None, iters: int | None = None, seed: int = 0) -> str:
    """``VisMAETrainer`` at 25%, subset seed 1, 5 epochs -> ``VisMAETrainer_labels25_seed1_5epochs``."""
    return str(TrainerName(arm.trainer, labels, seed, epochs, iters))
