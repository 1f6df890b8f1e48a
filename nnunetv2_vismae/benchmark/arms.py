"""The arms of the label-efficiency benchmark, in one table.

An arm is a trainer base and the plans it trains with: nnU-Net's, or those ``nnUNetv2_vismae_plan`` derives
for its encoder family. Trainer names follow the grammar of ``nnunetv2_vismae.trainer_names``:
``{trainer}_labels{P}[_seed{S}][_{E}epochs][_{M}iters]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunetv2_vismae.planning.families import PLANNING
from nnunetv2_vismae.trainer_names import TrainerName


@dataclass(frozen=True)
class Arm:
    name: str  # the --arms value and the ``arm`` column of results.csv
    title: str  # how report.md and the plot call it
    trainer: str  # trainer base, before the variant suffixes
    # the encoder families whose derived plans it trains (planning/families.py), at most one per spatial dimension
    # (the one whose planning plans it); all write the same plans, for the same trainer. (): nnU-Net's own plans
    families: tuple[str, ...] = ()
    needs_pretrained: bool = False  # the arm fine-tunes a checkpoint of its family (--pretrained)
    twin: str | None = None  # the same network and recipe from random weights (pretrained arms only)
    ablation: bool = False  # a recipe variant, run only when --arms names it
    probe: bool = False  # a frozen-encoder probe arm (--probe or --arms), reported apart from the verdict

    def family_for(self, dims: int) -> str | None:
        """The family whose plans it trains on a configuration of ``dims`` spatial dimensions (None: nnU-Net's own
        arm, or no family of its plans those)."""
        return next((f for f in self.families if dims in PLANNING[f].spatial_dims), None)

    @property
    def derived_plans(self) -> bool:
        """The plans are written by nnUNetv2_vismae_plan (not by nnU-Net)."""
        return bool(self.families)

    @property
    def plans(self) -> str:
        """The plans identifier passed to nnUNetv2_train -p (its families' one: tests/test_families.py)."""
        return PLANNING[self.families[0]].plans if self.derived_plans else NNUNET_PLANS

    def trains_dims(self, dims: int) -> bool:
        """Whether it can train a configuration of ``dims`` spatial dimensions: nnU-Net's own arm any, a
        derived one those its families plan."""
        return not self.derived_plans or self.family_for(dims) is not None

    def unplanned_dims(self, configuration: str, dims: int) -> str:
        """Why it cannot train ``configuration``, in one sentence."""
        why = "; ".join(PLANNING[f].unplanned_dims for f in self.families)
        return f"The {self.name} arm cannot train {configuration} ({dims}D): {why}; leave it out of --arms."

    def planned_from_checkpoint_only(self, dims: int) -> bool:
        """Its plans for ``dims`` dimensions copy the network a checkpoint was pretrained for: none can be planned
        without one."""
        family = self.family_for(dims)
        return family is not None and PLANNING[family].needs_checkpoint


NNUNET_PLANS = "nnUNetPlans"
REFERENCE_ARM = "nnunet"  # vanilla nnU-Net; its 100% run is what the other arms must match
REFERENCE_LABELS = 100

# the benchmark's family registry: each family's arms (planning/families.py names their plans); the Swin arms train
# the 2D Swin on 2d and the 3D one on 3d_fullres
SWIN, CNN = ("swin", "swin3d"), ("cnn",)
ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("nnunet", "nnU-Net", "nnUNetTrainer"),
        Arm("vismae", "VisMAE", "VisMAETrainer", SWIN, needs_pretrained=True, twin="scratch"),
        Arm("scratch", "VisMAE from scratch", "VisMAETrainerScratch", SWIN),
        Arm("cnn-mae", "nnU-Net + CNN MAE", "nnUNetTrainerMAE", CNN, needs_pretrained=True, twin="cnn-scratch"),
        Arm("cnn-scratch", "CNN MAE recipe from scratch", "nnUNetTrainerMAEScratch", CNN),
        # ablations of the recipes, each with its twin
        Arm(
            "vismae-llrd",
            "VisMAE, layer-wise lr decay",
            "VisMAETrainerLLRD",
            SWIN,
            needs_pretrained=True,
            twin="scratch",
            ablation=True,
        ),
        Arm(
            "cnn-mae-lowlr",
            "nnU-Net + CNN MAE, peak lr 1e-3",
            "nnUNetTrainerMAELowLR",
            CNN,
            needs_pretrained=True,
            twin="cnn-scratch-lowlr",
            ablation=True,
        ),
        Arm(
            "cnn-scratch-lowlr",
            "CNN MAE recipe from scratch, peak lr 1e-3",
            "nnUNetTrainerMAEScratchLowLR",
            CNN,
            ablation=True,
        ),
        # the frozen-encoder probe: what pretraining learned, the encoder fixed and only the decoder trained
        Arm(
            "vismae-frozen",
            "VisMAE, frozen encoder",
            "VisMAETrainerFrozen",
            SWIN,
            needs_pretrained=True,
            twin="vismae-frozen-random",
            probe=True,
        ),
        Arm("vismae-frozen-random", "VisMAE, frozen random encoder", "VisMAETrainerFrozenScratch", SWIN, probe=True),
        Arm(
            "cnn-mae-frozen",
            "nnU-Net + CNN MAE, frozen encoder",
            "nnUNetTrainerMAEFrozen",
            CNN,
            needs_pretrained=True,
            twin="cnn-frozen-random",
            probe=True,
        ),
        Arm(
            "cnn-frozen-random",
            "CNN MAE recipe, frozen random encoder",
            "nnUNetTrainerMAEFrozenScratch",
            CNN,
            probe=True,
        ),
    )
}


def default_arms(given_families: set[str], dims: int = 2) -> list[str]:
    """Every arm whose inputs are given and that trains ``dims`` dimensions: vismae with a swin checkpoint (2D) or a
    swin3d one (3D), both cnn arms with a cnn one."""
    return [
        name
        for name, arm in ARMS.items()
        if not (arm.ablation or arm.probe)
        and arm.trains_dims(dims)
        and (
            arm.family_for(dims) in given_families
            or not (arm.needs_pretrained or arm.planned_from_checkpoint_only(dims))
        )
    ]


def probe_arms(given_families: set[str], dims: int = 2) -> list[str]:
    """The frozen-encoder probe arms (pretrained and random twin) of every family whose checkpoint is given, that
    train ``dims`` dimensions."""
    return [
        name
        for name, arm in ARMS.items()
        if arm.probe and arm.trains_dims(dims) and arm.family_for(dims) in given_families
    ]


def is_probe(arm: str) -> bool:
    return arm in ARMS and ARMS[arm].probe


def trainer_name(arm: Arm, labels: int, epochs: int | None = None, iters: int | None = None, seed: int = 0) -> str:
    """``VisMAETrainer`` at 25%, subset seed 1, 5 epochs -> ``VisMAETrainer_labels25_seed1_5epochs``."""
    return str(TrainerName(arm.trainer, labels, seed, epochs, iters))
