"""Read nnU-Net's validation summaries and write results.csv, report.md and label_efficiency.png.

The numbers are nnU-Net's own: ``validation/summary.json`` of each fold, its ``foreground_mean``
Dice (the "mean Dice") and the per-class ``mean`` Dice. Statistics are over folds: the mean and
the sample standard deviation (n - 1; none for a single fold).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_vismae.benchmark.arms import ARMS, HEADLINE_ARM, REFERENCE_ARM
from nnunetv2_vismae.benchmark.errors import BenchmarkError
from nnunetv2_vismae.io.atomic import write_bytes_atomic
from nnunetv2_vismae.io.figures import png_bytes

MATCH_MARGIN = 0.01  # "matches": mean Dice >= nnU-Net@100% mean Dice - MATCH_MARGIN
MEANINGFUL_REFERENCE_DICE = 0.2  # below this nnU-Net@100% has not learned the task yet


@dataclass(frozen=True)
class FoldResult:
    arm: str
    labels: int
    fold: str
    class_dice: dict  # class key as in summary.json ("1", "(1, 2)") -> Dice
    mean_dice: float


@dataclass(frozen=True)
class Stat:
    mean: float
    sd: float | None  # None for a single fold
    n: int

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "–"
        sd = "–" if self.sd is None else f"{self.sd:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {sd}"


def read_summary(path: Path, arm: str, labels: int, fold: str) -> FoldResult:
    try:
        summary = json.loads(Path(path).read_text())
        per_class = {key: float(value["Dice"]) for key, value in summary["mean"].items()}
        mean = float(summary["foreground_mean"]["Dice"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchmarkError(f"{path} is not a readable nnU-Net validation summary "
                             f"({type(e).__name__}: {e}).") from None
    return FoldResult(arm, labels, str(fold), per_class, mean)


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


def class_keys(results: list[FoldResult]) -> list[str]:
    keys = dict.fromkeys(k for r in results for k in r.class_dice)
    return sorted(keys, key=lambda k: (0, int(k)) if k.lstrip("-").isdigit() else (1, k))


def stat(values) -> Stat:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return Stat(math.nan, None, 0)
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return Stat(mean, sd, len(values))


def group_stats(results: list[FoldResult]) -> dict:
    """(arm, labels) -> {"mean": Stat, class key: Stat}, arms and fractions in the order found."""
    groups: dict = {}
    for r in results:
        groups.setdefault((r.arm, r.labels), []).append(r)
    out = {}
    for key, rows in groups.items():
        out[key] = {"mean": stat([r.mean_dice for r in rows])}
        for k in class_keys(rows):
            out[key][k] = stat([r.class_dice[k] for r in rows if k in r.class_dice])
        out[key]["folds"] = [r.fold for r in rows]
    return out


def reference_dice(stats: dict) -> float | None:
    ref = stats.get((REFERENCE_ARM, 100))
    return None if ref is None or math.isnan(ref["mean"].mean) else ref["mean"].mean


def matching_fraction(stats: dict, arm: str) -> int | None:
    """The smallest label fraction at which ``arm`` matches nnU-Net@100% (None if none does)."""
    ref = reference_dice(stats)
    if ref is None:
        return None
    matching = [p for (a, p), s in stats.items() if a == arm and s["mean"].mean >= ref - MATCH_MARGIN]
    return min(matching) if matching else None


def reference_caveat(stats: dict) -> str | None:
    """Why "matches" says little here, if it does: nnU-Net@100% learned next to nothing, or no more
    than nnU-Net with fewer labels (then the task needs few labels, or the runs were too short)."""
    ref = reference_dice(stats)
    if ref is None:
        return None
    if ref < MEANINGFUL_REFERENCE_DICE:
        return (f"Caution: vanilla nnU-Net at 100% labels reached only mean Dice {ref:.3f}, so matching it says "
                "little; the runs are too short for this task (raise --epochs / --iters).")
    fewer = {p: s["mean"].mean for (a, p), s in stats.items() if a == REFERENCE_ARM and p < 100}
    if fewer and min(fewer.values()) >= ref - MATCH_MARGIN:
        p = min(fewer, key=fewer.get)
        return (f"Caution: vanilla nnU-Net scores as well with {p}% of the labels ({fewer[p]:.3f}) as with 100% "
                f"({ref:.3f}): on this task and schedule more labels do not help, so there are no labels to save.")
    return None


def arm_title(arm: str) -> str:
    return ARMS[arm].title if arm in ARMS else arm


def matching_sentence(stats: dict, arm: str) -> str:
    title = arm_title(arm)
    arm_stats = {p: s for (a, p), s in stats.items() if a == arm}
    if not arm_stats:
        return f"{title} was not part of this benchmark."
    ref = reference_dice(stats)
    if ref is None:
        return (f"The smallest label fraction at which {title} matches vanilla nnU-Net at 100% labels cannot be "
                "computed: there is no nnU-Net run at 100% labels.")
    fraction = matching_fraction(stats, arm)
    if fraction is None:
        best = max(arm_stats, key=lambda p: arm_stats[p]["mean"].mean)
        return (f"{title} does not match vanilla nnU-Net at 100% labels (mean Dice {ref:.3f}) at any label "
                f"fraction tested; its best is {arm_stats[best]['mean'].mean:.3f} at {best}%.")
    return (f"The smallest label fraction at which {title} matches vanilla nnU-Net at 100% labels is "
            f"{fraction}% (mean Dice {arm_stats[fraction]['mean'].mean:.3f} vs {ref:.3f}).")


def column_name(key: str, names: dict) -> str:
    return f"dice_{names.get(key, key)}"


def results_csv(results: list[FoldResult], names: dict) -> str:
    keys = class_keys(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arm", "labels", "fold", *(column_name(k, names) for k in keys), "mean_dice"])
    for r in results:
        writer.writerow([r.arm, r.labels, r.fold, *(_num(r.class_dice.get(k, math.nan)) for k in keys),
                         _num(r.mean_dice)])
    return buffer.getvalue()


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6f}"


def report_markdown(results: list[FoldResult], names: dict, title: str, commands: list[str],
                    settings_lines: list[str]) -> str:
    stats = group_stats(results)
    keys = class_keys(results)
    arms = list(dict.fromkeys(r.arm for r in results))
    lines = [f"# Label efficiency: {title}", ""]
    lines += settings_lines + [""]
    lines += ["## Result", ""]
    compared = sorted((a for a in arms if a != REFERENCE_ARM), key=lambda a: a != HEADLINE_ARM)
    for arm in compared or [HEADLINE_ARM]:
        lines += [matching_sentence(stats, arm), ""]
    caveat = reference_caveat(stats)
    if caveat:
        lines += [caveat, ""]
    lines += [f'"Matches" means a mean Dice (over folds) of at least vanilla nnU-Net\'s mean Dice at 100% '
              f"labels minus {MATCH_MARGIN}.", ""]
    lines += ["## Dice per arm and label fraction", "",
              "Mean ± sd over folds of nnU-Net's validation Dice (`validation/summary.json` of each fold): "
              "the mean Dice is the foreground mean, then one column per class. sd is the sample standard "
              "deviation over folds (n - 1), '–' for a single fold.", ""]
    header = ["arm", "labels", "folds", "mean Dice", *(names.get(k, k) for k in keys)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for arm in arms:
        for (a, p), s in sorted(stats.items(), key=lambda item: item[0][1]):
            if a != arm:
                continue
            cells = [arm_title(a), f"{p}%", str(s["mean"].n), s["mean"].text(),
                     *(s[k].text() if k in s else "–" for k in keys)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Commands", "", "This report was produced by:", "", "```bash", *commands, "```", ""]
    return "\n".join(lines)


def plot_png(results: list[FoldResult], title: str) -> bytes:
    """Mean Dice against label fraction, one line per arm, error bars = sd over folds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    stats = group_stats(results)
    figure = Figure(figsize=(6.4, 4.4))
    ax = figure.subplots()
    for arm in dict.fromkeys(r.arm for r in results):
        points = sorted((p, s["mean"]) for (a, p), s in stats.items() if a == arm and s["mean"].n)
        if not points:
            continue
        ax.errorbar([p for p, _ in points], [s.mean for _, s in points], yerr=[s.sd or 0.0 for _, s in points],
                    marker="o", capsize=4, label=arm_title(arm))
    ref = reference_dice(stats)
    if ref is not None:
        ax.axhline(ref - MATCH_MARGIN, color="gray", linestyle="--", linewidth=1,
                   label=f"nnU-Net at 100% − {MATCH_MARGIN}")
    fractions = sorted({r.labels for r in results})
    ax.set_xticks(fractions)
    ax.set_xlabel("Labelled training cases (% of each fold's training set)")
    ax.set_ylabel("Mean Dice (validation, mean ± sd over folds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return png_bytes(figure)


def write_outputs(out: Path, results: list[FoldResult], names: dict, title: str, commands: list[str],
                  settings_lines: list[str]) -> list[Path]:
    """results.csv, report.md and label_efficiency.png in ``out``, each written atomically."""
    out = Path(out)
    files = {out / "results.csv": results_csv(results, names).encode(),
             out / "report.md": report_markdown(results, names, title, commands, settings_lines).encode(),
             out / "label_efficiency.png": plot_png(results, title)}
    for path, data in files.items():
        write_bytes_atomic(path, data)
    return list(files)
