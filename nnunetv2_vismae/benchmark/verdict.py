"""What the benchmark may claim: per-case Dice pooled per arm and fraction, the paired comparisons,
and the verdict by non-inferiority.

(a) arm@P against vanilla nnU-Net@100%, (b) a pretrained arm@P against its scratch twin@P,
(c) arm@P against vanilla nnU-Net@P; apart from these, (d) the frozen-encoder probe: a pretrained
frozen encoder@P against the same network with a random frozen encoder@P. "Non-inferior" means the
lower bound of the 95% CI of (a) lies above -margin; "beats its twin" means the CI of (b) lies
above 0. No verdict is drawn when nnU-Net@100% has not learned the task: a class below
``LEARNED_DICE``, or no better than nnU-Net at the smallest fraction run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnunetv2_vismae.benchmark.arms import ARMS, REFERENCE_ARM, REFERENCE_LABELS, is_probe
from nnunetv2_vismae.benchmark.statistics import Estimate, Paired, better, mean_ci, non_inferior, paired, worse

MEAN = "mean"  # the per-case mean Dice over classes, stored beside the class keys
LEARNED_DICE = 0.5  # a class nnU-Net@100% scores below this is not learned yet
REFERENCE, TWIN, SAME_FRACTION = "vs nnU-Net@100%", "vs scratch twin", "vs nnU-Net, same labels"
PROBE = "pretrained − random frozen encoder"


def arm_title(arm: str) -> str:
    return ARMS[arm].title if arm in ARMS else arm


@dataclass(frozen=True)
class Group:
    """One arm at one label fraction: Dice per scored case. Validation cases are pooled over folds (each
    is validated in one); a case scored by several runs (subset seeds, or folds on a test set) is averaged."""

    arm: str
    labels: int
    cases: dict  # (fold or "test", case id) -> {class key or MEAN: Dice}
    runs: int

    def values(self, key: str) -> dict:
        return {case: dice.get(key, math.nan) for case, dice in self.cases.items()}

    def estimate(self, key: str = MEAN) -> Estimate:
        return mean_ci(self.values(key).values())


def pool(results) -> dict:
    """(arm, labels) -> Group, in the order found; ``results`` are report.RunResult."""
    collected: dict = {}
    for r in results:
        runs, cases = collected.setdefault((r.arm, r.labels), ([], {}))
        runs.append(r)
        for case, dice in r.cases.items():
            cases.setdefault((r.fold if r.split == "validation" else r.split, case), []).append(dice)
    return {
        (arm, labels): Group(arm, labels, {case: _average(seeds) for case, seeds in cases.items()}, len(runs))
        for (arm, labels), (runs, cases) in collected.items()
    }


def _average(dice_per_seed: list[dict]) -> dict:
    keys = dict.fromkeys(k for dice in dice_per_seed for k in dice)
    return {k: float(np.mean([dice.get(k, math.nan) for dice in dice_per_seed])) for k in keys}


@dataclass(frozen=True)
class Comparison:
    kind: str  # REFERENCE, TWIN or SAME_FRACTION
    arm: str
    labels: int
    against: tuple[str, int]
    by_key: dict  # class key or MEAN -> Paired

    @property
    def overall(self) -> Paired:
        return self.by_key[MEAN]

    @property
    def title(self) -> str:
        arm, labels = self.against
        return f"{arm_title(self.arm)} {self.labels}% − {arm_title(arm)} {labels}%"


def compare(groups: dict, kind: str, arm: str, labels: int, against: tuple[str, int], keys) -> Comparison | None:
    if (arm, labels) not in groups or against not in groups or (arm, labels) == against:
        return None
    a, b = groups[(arm, labels)], groups[against]
    return Comparison(kind, arm, labels, against, {k: paired(a.values(k), b.values(k)) for k in (MEAN, *keys)})


def comparisons(groups: dict, keys) -> list[Comparison]:
    """(a), (b) and (c) for every arm and fraction that ran, (c) only below 100%; not for the probe arms."""
    found = []
    for arm, labels in groups:
        if is_probe(arm):
            continue
        if arm != REFERENCE_ARM:
            twin = ARMS[arm].twin if arm in ARMS else None
            found.append(compare(groups, REFERENCE, arm, labels, (REFERENCE_ARM, REFERENCE_LABELS), keys))
            found.append(twin and compare(groups, TWIN, arm, labels, (twin, labels), keys))
            if labels < REFERENCE_LABELS:
                found.append(compare(groups, SAME_FRACTION, arm, labels, (REFERENCE_ARM, labels), keys))
        elif labels < REFERENCE_LABELS:  # how much nnU-Net itself loses with fewer labels
            found.append(compare(groups, REFERENCE, arm, labels, (REFERENCE_ARM, REFERENCE_LABELS), keys))
    kinds = (REFERENCE, TWIN, SAME_FRACTION)
    return sorted((c for c in found if c), key=lambda c: kinds.index(c.kind))  # stable: arms keep their order


def probe_comparisons(groups: dict, keys) -> list[Comparison]:
    """(d) for every pretrained probe arm and fraction whose random twin ran at the same fraction."""
    found = (
        compare(groups, PROBE, arm, labels, (ARMS[arm].twin, labels), keys)
        for arm, labels in groups
        if is_probe(arm) and ARMS[arm].twin
    )
    return [c for c in found if c]


def probe_reading(gain: Paired) -> str:
    """What a probe's paired difference says about the pretrained features."""
    if better(gain):
        return "the pretrained features are better than random ones for this decoder"
    if worse(gain):
        return "the pretrained features are worse than random ones for this decoder"
    return "no measurable difference between pretrained and random features (the CI includes 0)"


@dataclass(frozen=True)
class Analysis:
    """Everything the report and the plot show, computed once (the bootstraps take a moment)."""

    groups: dict  # (arm, labels) -> Group
    keys: list  # class keys
    found: list  # Comparison, (a) to (c)
    probes: list  # Comparison, (d)

    @classmethod
    def of(cls, results, keys) -> "Analysis":
        groups = pool(results)
        return cls(groups, list(keys), comparisons(groups, keys), probe_comparisons(groups, keys))


def untrained_reason(groups: dict, keys, names: dict) -> str | None:
    """Why no verdict can be drawn from these runs, or None when vanilla nnU-Net@100% learned the task."""
    reference = groups.get((REFERENCE_ARM, REFERENCE_LABELS))
    if reference is None:
        return "there is no run of vanilla nnU-Net at 100% labels to compare with (add nnunet to --arms)"
    weak = [(names.get(k, k), reference.estimate(k).mean) for k in keys if reference.estimate(k).mean < LEARNED_DICE]
    if weak:
        listed = ", ".join(f"{name} {dice:.3f}" for name, dice in weak)
        return (
            f"vanilla nnU-Net at 100% labels has not learned every class (Dice below {LEARNED_DICE}: {listed}); "
            "the runs are too short for this task (raise --epochs / --iters), or the scored cases differ from "
            "the labeled ones (a test set of other scanners or styles)"
        )
    smaller = sorted(p for a, p in groups if a == REFERENCE_ARM and p < REFERENCE_LABELS)
    if smaller:
        gain = compare(groups, REFERENCE, REFERENCE_ARM, REFERENCE_LABELS, (REFERENCE_ARM, smaller[0]), keys).overall
        if not better(gain):
            return (
                f"vanilla nnU-Net at 100% labels is not better than at {smaller[0]}% by a confidence interval "
                f"that excludes 0 (difference {gain.difference.text(signed=True)}, {gain.n} cases): on this task "
                "and schedule more labels do not measurably help, so there are no labels to save"
            )
    return None


def find(found: list[Comparison], kind: str, arm: str, labels: int) -> Comparison | None:
    return next((c for c in found if (c.kind, c.arm, c.labels) == (kind, arm, labels)), None)


def verdict_lines(groups: dict, found: list[Comparison], margin: float) -> list[str]:
    """One line per pretrained arm: its smallest non-inferior fraction and its gain over its twin."""
    lines = []
    for arm in dict.fromkeys(a for a, _ in groups):
        if arm in ARMS and ARMS[arm].twin and not ARMS[arm].probe:
            lines += [non_inferiority_line(groups, found, arm, margin), twin_line(groups, found, arm)]
    return lines


def non_inferiority_line(groups: dict, found: list[Comparison], arm: str, margin: float) -> str:
    fractions = sorted(p for a, p in groups if a == arm)
    passing = [p for p in fractions if non_inferior(find(found, REFERENCE, arm, p).overall, margin)]
    if not passing:
        return (
            f"- **{arm_title(arm)}** is non-inferior to vanilla nnU-Net at 100% labels at none of the fractions "
            f"run ({', '.join(f'{p}%' for p in fractions)}; margin {margin} Dice)."
        )
    p = passing[0]
    c = find(found, REFERENCE, arm, p).overall
    return (
        f"- **{arm_title(arm)}** is non-inferior to vanilla nnU-Net at 100% labels with as few as **{p}%** of "
        f"the labels: paired difference {c.difference.text(signed=True)} over {c.n} cases, above −{margin} "
        f"(non-inferior at {', '.join(f'{q}%' for q in passing)} of {', '.join(f'{q}%' for q in fractions)})."
    )


def twin_line(groups: dict, found: list[Comparison], arm: str) -> str:
    smallest = min(p for a, p in groups if a == arm)
    twin = ARMS[arm].twin
    c = find(found, TWIN, arm, smallest)
    if c is None:
        return f"  Its scratch twin ({arm_title(twin)}) did not run at {smallest}%, so its gain cannot be measured."
    gain = c.overall
    outcome = (
        "beats its scratch twin"
        if better(gain)
        else "is worse than its scratch twin"
        if worse(gain)
        else "does not measurably differ from its scratch twin (the CI includes 0)"
    )
    p = "" if gain.p_value is None else f", Wilcoxon p = {gain.p_value:.3g}"
    return (
        f"  At {smallest}% it {outcome}: {gain.difference.text(signed=True)} Dice over {gain.n} cases{p}, "
        f"{gain.improved} of {gain.n} cases improved."
    )
