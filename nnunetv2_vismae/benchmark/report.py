"""Read nnU-Net's validation summaries and write results.csv, cases.csv, report.md and label_efficiency.png
(and probe.png when the frozen-encoder probe ran).

The numbers are nnU-Net's own: ``validation/summary.json`` of each run, its per-case Dice
(``metric_per_case``) and its fold means. A case's mean Dice is the mean of its classes' Dice.
The statistics are in ``statistics.py``, what they allow one to claim in ``verdict.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_vismae.benchmark import verdict as v
from nnunetv2_vismae.benchmark.arms import ARMS, REFERENCE_LABELS, is_probe
from nnunetv2_vismae.benchmark.errors import BenchmarkError
from nnunetv2_vismae.benchmark.statistics import CONFIDENCE, DEFAULT_MARGIN
from nnunetv2_vismae.io.figures import new_figure, png_bytes
from nnunetv2_vismae.io.report import csv_text, markdown_table, write_files
from nnunetv2_vismae.label_subsets import LABEL_SUBSET_FILE


@dataclass(frozen=True)
class RunResult:
    """One run's scores, on its fold's validation cases or on the test set: (arm, label fraction, subset seed, fold)."""

    arm: str
    labels: int
    fold: str
    class_dice: dict  # class key as in summary.json ("1", "(1, 2)") -> nnU-Net's mean Dice over the cases
    mean_dice: float  # nnU-Net's foreground mean
    cases: dict  # case id -> {class key: Dice, v.MEAN: mean over classes}
    seed: int = 0
    split: str = "validation"  # or "test": every run scores the same test cases
    training_cases: tuple[str, ...] = ()  # its label subset (label_subset.json); () when it trained on the whole fold


def case_id(metrics: dict) -> str:
    name = Path(metrics["reference_file"]).name
    for ending in (".nii.gz", ".seg.nrrd"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def read_cases(metric_per_case: list) -> dict:
    cases = {}
    for entry in metric_per_case:
        dice = {key: float(values["Dice"]) for key, values in entry["metrics"].items()}
        finite = [d for d in dice.values() if math.isfinite(d)]
        cases[case_id(entry)] = {**dice, v.MEAN: float(np.mean(finite)) if finite else math.nan}
    return cases


def read_scores(path: Path) -> tuple[dict, float, dict]:
    """(per-class mean Dice, foreground mean Dice, per-case Dice) of an nnU-Net summary.json;
    BenchmarkError (one sentence naming the file) when it is missing, truncated or lacks them."""
    try:
        summary = json.loads(Path(path).read_text())
        per_class = {key: float(value["Dice"]) for key, value in summary["mean"].items()}
        mean = float(summary["foreground_mean"]["Dice"])
        cases = read_cases(summary["metric_per_case"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BenchmarkError(
            f"{path} is not a readable nnU-Net validation summary ({type(e).__name__}: {e})."
        ) from None
    return per_class, mean, cases


def is_readable_summary(path: Path) -> bool:
    """Whether ``path`` holds the scores the report reads (a summary cut short by a kill or a full disk does not)."""
    try:
        read_scores(path)
    except BenchmarkError:
        return False
    return True


def read_summary(path: Path, arm: str, labels: int, fold: str, seed: int = 0, split: str = "validation") -> RunResult:
    per_class, mean, cases = read_scores(path)
    return RunResult(arm, labels, str(fold), per_class, mean, cases, seed, split, read_label_subset(path))


def read_label_subset(summary: Path) -> tuple[str, ...]:
    """The training cases a run's trainer variant wrote to its fold folder (validation/ or test/'s parent)."""
    path = Path(summary).parent.parent / LABEL_SUBSET_FILE
    if not path.is_file():
        return ()
    try:
        train = json.loads(path.read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchmarkError(f"{path} is not a readable label subset ({type(e).__name__}: {e}).") from None
    if not isinstance(train, list) or not all(isinstance(case, str) for case in train):
        raise BenchmarkError(f"{path} is not a readable label subset (its train is not a list of case names).")
    return tuple(sorted(train))


def class_names(dataset_json: Path | None) -> dict:
    """summary.json class keys -> label names from dataset.json (regions keyed like nnU-Net does)."""
    if dataset_json is None or not Path(dataset_json).is_file():
        return {}
    labels = json.loads(Path(dataset_json).read_text()).get("labels", {})
    names = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            names[str(tuple(value))] = name
            if len(value) == 1:
                names.setdefault(str(value[0]), name)
        else:
            names[str(value)] = name
    return names


def class_keys(results: list[RunResult]) -> list[str]:
    keys = dict.fromkeys(k for r in results for k in r.class_dice)
    return sorted(keys, key=lambda k: (0, int(k)) if k.lstrip("-").isdigit() else (1, k))


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6f}"


def results_csv(results: list[RunResult], names: dict) -> str:
    """One row per run: nnU-Net's fold means, and the cases it trained on (empty: the whole fold)."""
    keys = class_keys(results)
    dice = (f"dice_{names.get(k, k)}" for k in keys)
    header = ["arm", "labels", "seed", "fold", "cases", *dice, "mean_dice", "training_cases"]
    return csv_text(
        header,
        (
            [
                r.arm,
                r.labels,
                r.seed,
                r.fold,
                len(r.cases),
                *(_num(r.class_dice.get(k, math.nan)) for k in keys),
                _num(r.mean_dice),
                " ".join(r.training_cases),
            ]
            for r in results
        ),
    )


def cases_csv(results: list[RunResult], names: dict) -> str:
    """One row per run and validated case, so anyone can redo the statistics."""
    keys = class_keys(results)
    header = ["arm", "labels", "seed", "fold", "case", *(f"dice_{names.get(k, k)}" for k in keys), "mean_dice"]
    return csv_text(
        header,
        (
            [r.arm, r.labels, r.seed, r.fold, case, *(_num(dice.get(k, math.nan)) for k in keys), _num(dice[v.MEAN])]
            for r in results
            for case, dice in r.cases.items()
        ),
    )


def dice_table(groups: dict, keys: list[str], names: dict) -> list[str]:
    arms = list(dict.fromkeys(a for a, _ in groups))
    ordered = sorted(groups.values(), key=lambda g: (arms.index(g.arm), g.labels))
    rows = [
        [
            v.arm_title(g.arm),
            f"{g.labels}%",
            len(g.cases),
            g.runs,
            g.estimate().text(),
            *(g.estimate(k).text() for k in keys),
        ]
        for g in ordered
    ]
    header = ["arm", "labels", "cases", "runs", "mean Dice [95% CI]", *(names.get(k, k) for k in keys)]
    return markdown_table(header, rows)


def comparison_table(found: list[v.Comparison], keys: list[str], names: dict) -> list[str]:
    rows = []
    for c in found:
        o = c.overall
        p = "–" if o.p_value is None else f"{o.p_value:.3g}"
        rows.append(
            [
                c.kind,
                c.title,
                o.n,
                o.difference.text(signed=True),
                p,
                f"{o.improved}/{o.n}",
                *(c.by_key[k].difference.text(signed=True) for k in keys),
            ]
        )
    return markdown_table(
        [
            "comparison",
            "difference",
            "cases",
            "Δ mean Dice [95% CI]",
            "Wilcoxon p",
            "improved",
            *(f"Δ {names.get(k, k)}" for k in keys),
        ],
        rows,
    )


PROBE_SECTION = "## What pretraining learned (frozen-encoder probe)"


def probe_section(analysis: v.Analysis, dims: int) -> list[str]:
    """Per family and fraction: the pretrained frozen encoder against the random one, paired, and what it says."""
    probed = [arm for arm in dict.fromkeys(a for a, _ in analysis.groups) if is_probe(arm)]
    if not probed:
        return []
    lines = [
        PROBE_SECTION,
        "",
        "The encoder is frozen (no gradients, inference mode) and only the rest of the network trains (the "
        "decoder; in the Swin network also its full-resolution conv stem), once on the pretrained encoder and "
        "once on a random one of the same network and recipe: the paired "
        "difference says whether the pretrained features help this decoder more than random features. "
        "These arms are not part of the verdict.",
        "",
    ]
    rows = []
    for c in analysis.probes:
        gain, twin = c.overall, c.against
        p = "–" if gain.p_value is None else f"{gain.p_value:.3g}"
        rows.append(
            [
                ARMS[c.arm].family_for(dims),
                f"{c.labels}%",
                gain.n,
                analysis.groups[(c.arm, c.labels)].estimate().text(),
                analysis.groups[twin].estimate().text(),
                gain.difference.text(signed=True),
                p,
                f"{gain.improved}/{gain.n}",
                v.probe_reading(gain),
            ]
        )
    header = ["family", "labels", "cases", "pretrained frozen", "random frozen", "Δ mean Dice [95% CI]"]
    lines += markdown_table([*header, "Wilcoxon p", "improved", "reading"], rows) if rows else []
    compared = {(c.arm, c.labels) for c in analysis.probes}
    for arm, labels in analysis.groups:
        if is_probe(arm) and ARMS[arm].twin and (arm, labels) not in compared:
            lines.append(
                f"- {v.arm_title(arm)} at {labels}%: its twin {v.arm_title(ARMS[arm].twin)} did not run there."
            )
    return lines + [""]


def headline(groups: dict, found: list[v.Comparison], keys: list[str], names: dict, margin: float) -> list[str]:
    """The verdict, or the reason there is none, before anything else."""
    reason = v.untrained_reason(groups, keys, names)
    if reason:
        return [
            f"**No verdict: {reason}.** The tables below are measurements only; no claim about label "
            "savings can be drawn from them.",
            "",
        ]
    lines = v.verdict_lines(groups, found, margin)
    if not lines:
        return [
            "No pretrained arm ran, so there is no verdict about pretraining; the tables compare the arms that ran.",
            "",
        ]
    return lines + [""]


def explanation(margin: float) -> list[str]:
    percent = round(CONFIDENCE * 100)
    return [
        f"Every scored case counts once: validation cases are pooled over folds, and a case scored by several "
        f"runs (label-subset seeds, or the folds' models on a test set) gets their mean Dice. Brackets are "
        f"{percent}% bootstrap confidence intervals over cases. A comparison is paired: both arms are scored on "
        f"the same cases and the interval is that of the mean per-case difference. An arm is **non-inferior** "
        f"to vanilla nnU-Net at 100% labels when that interval lies above −{margin} Dice (the margin), and "
        f"**beats its scratch twin** (same network and recipe, random weights) when its interval lies above 0.",
        "",
    ]


def report_markdown(
    analysis: v.Analysis,
    names: dict,
    title: str,
    commands: list[str],
    settings_lines: list[str],
    dims: int,
    margin: float = DEFAULT_MARGIN,
) -> str:
    groups, keys, found = analysis.groups, analysis.keys, analysis.found
    lines = [f"# Label efficiency: {title}", "", *headline(groups, found, keys, names, margin)]
    lines += settings_lines + [""] + explanation(margin)
    lines += ["## Dice per arm and label fraction", "", *dice_table(groups, keys, names)]
    lines += [
        "## Paired comparisons",
        "",
        "(a) against vanilla nnU-Net at 100% labels, (b) a pretrained arm against "
        "its scratch twin at the same fraction, (c) against vanilla nnU-Net at the same fraction.",
        "",
        *comparison_table(found, keys, names),
    ]
    lines += probe_section(analysis, dims)
    lines += ["## Commands", "", "This report was produced by:", "", "```bash", *commands, "```", ""]
    return "\n".join(lines)


def _errorbar(ax, x: float, estimate, **style) -> None:
    low, high = (estimate.low, estimate.high) if estimate.low is not None else (estimate.mean, estimate.mean)
    ax.errorbar(
        [x], [estimate.mean], yerr=[[estimate.mean - low], [high - estimate.mean]], marker="o", capsize=4, **style
    )


def plot_png(analysis: v.Analysis, title: str, margin: float = DEFAULT_MARGIN) -> bytes:
    """Left: mean Dice with its CI per arm and fraction. Right: the paired difference to vanilla
    nnU-Net at 100% with its CI and the non-inferiority band. The probe arms have their own figure."""
    groups = {(arm, labels): g for (arm, labels), g in analysis.groups.items() if not is_probe(arm)}
    found = {(c.arm, c.labels): c for c in analysis.found if c.kind == v.REFERENCE}
    figure = new_figure((11.0, 4.4))
    dice_ax, delta_ax = figure.subplots(1, 2)
    arms = list(dict.fromkeys(a for a, _ in groups))
    for i, arm in enumerate(arms):
        offset = (i - (len(arms) - 1) / 2) * 1.2  # side by side, so the intervals do not hide each other
        color = f"C{i}"
        points = sorted((p, g) for (a, p), g in groups.items() if a == arm and g.cases)
        dice_ax.plot([p + offset for p, _ in points], [g.estimate().mean for _, g in points], color=color, alpha=0.5)
        for j, (p, g) in enumerate(points):
            _errorbar(dice_ax, p + offset, g.estimate(), color=color, label=v.arm_title(arm) if j == 0 else None)
            if (arm, p) in found and found[(arm, p)].overall.n:
                _errorbar(delta_ax, p + offset, found[(arm, p)].overall.difference, color=color)
    delta_ax.axhspan(-margin, 0, color="tab:green", alpha=0.15, label=f"non-inferiority margin (−{margin})")
    delta_ax.axhline(0, color="gray", linewidth=1)
    fractions = sorted({labels for _, labels in groups})
    for ax, label in (
        (dice_ax, "Mean Dice (scored cases)"),
        (delta_ax, f"Paired Δ mean Dice vs nnU-Net at {REFERENCE_LABELS}%"),
    ):
        ax.set_xticks(fractions)
        ax.set_xlabel("Labelled training cases (% of each fold's training set)")
        ax.set_ylabel(f"{label}, {round(CONFIDENCE * 100)}% CI")
        ax.grid(alpha=0.3)
    dice_ax.set_title(title)
    delta_ax.set_title(f"Non-inferior where the whole bar is above −{margin}")
    dice_ax.legend(fontsize="small")
    delta_ax.legend(fontsize="small", loc="lower right")
    return png_bytes(figure)


def probe_png(analysis: v.Analysis, title: str, dims: int) -> bytes:
    """The probe's paired difference (pretrained − random frozen encoder) with its CI per family and fraction."""
    figure = new_figure((6.0, 4.4))
    ax = figure.subplots()
    families = list(dict.fromkeys(ARMS[c.arm].family_for(dims) for c in analysis.probes))
    for i, family in enumerate(families):
        offset = (i - (len(families) - 1) / 2) * 1.2
        points = sorted(
            (c.labels, c.overall.difference) for c in analysis.probes if ARMS[c.arm].family_for(dims) == family
        )
        ax.plot([p + offset for p, _ in points], [d.mean for _, d in points], color=f"C{i}", alpha=0.5)
        for j, (p, difference) in enumerate(points):
            _errorbar(ax, p + offset, difference, color=f"C{i}", label=family if j == 0 else None)
    ax.axhline(0, color="gray", linewidth=1)
    ax.set_xticks(sorted({c.labels for c in analysis.probes}))
    ax.set_xlabel("Labelled training cases (% of each fold's training set)")
    ax.set_ylabel(f"Δ mean Dice, pretrained − random, {round(CONFIDENCE * 100)}% CI")
    ax.set_title(f"Frozen-encoder probe: {title}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="family")
    return png_bytes(figure)


def write_outputs(
    out: Path,
    results: list[RunResult],
    names: dict,
    title: str,
    commands: list[str],
    settings_lines: list[str],
    dims: int,
    margin: float = DEFAULT_MARGIN,
) -> list[Path]:
    """results.csv, cases.csv, report.md, label_efficiency.png (when an arm other than the probe's ran) and
    probe.png (when the probe ran) in ``out``, each written atomically."""
    out, analysis = Path(out), v.Analysis.of(results, class_keys(results))
    files = {
        out / "results.csv": results_csv(results, names).encode(),
        out / "cases.csv": cases_csv(results, names).encode(),
        out / "report.md": report_markdown(analysis, names, title, commands, settings_lines, dims, margin).encode(),
    }
    if not all(is_probe(arm) for arm, _ in analysis.groups):
        files[out / "label_efficiency.png"] = plot_png(analysis, title, margin)
    if analysis.probes:
        files[out / "probe.png"] = probe_png(analysis, title, dims)
    return write_files(files)
