"""Dice by appearance style: a benchmark's test-set scores (its report folder's cases.csv) split by the style
each phantom was rendered in (phantoms.json), the styles labeled cases were drawn in apart from the others.
The demo calls it as a step (in the demo's process); on its own: ``python -m nnunetv2_vismae.benchmark.style_report
REPORT_DIR PHANTOMS_JSON``.

Under an appearance shift (``--shift``: labels only in some styles) this is where pretraining on an unlabeled
pool of every style should show: on the styles no labeled case has.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from nnunetv2_vismae.benchmark.arms import ARMS, REFERENCE_ARM, REFERENCE_LABELS
from nnunetv2_vismae.benchmark.statistics import mean_ci, paired
from nnunetv2_vismae.benchmark.verdict import arm_title
from nnunetv2_vismae.errors import UserError
from nnunetv2_vismae.flags import OneSentenceParser, console_script
from nnunetv2_vismae.io.atomic import write_bytes_atomic


def case_dice(cases_csv: Path) -> dict:
    """(arm, labels) -> {case: mean Dice over classes}, averaged over the runs that scored a case (subset seeds)."""
    collected: dict = {}
    with open(cases_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            run = collected.setdefault((row["arm"], int(row["labels"])), {})
            run.setdefault(row["case"], []).append(float(row["mean_dice"]))
    return {run: {case: float(np.mean(v)) for case, v in cases.items()} for run, cases in collected.items()}


def training_styles(results_csv: Path, style_of: dict) -> dict:
    """(arm, labels) -> the styles of the cases each run trained on ("ct 2, us 1"; the runs of other subset seeds
    or folds after a slash), from results.csv's training_cases; "whole fold" for a run without a label subset,
    "?" where the results.csv is older than that column."""
    styles: dict = {}
    with open(results_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("training_cases") is None:
                text = "?"
            else:
                counts = Counter(style_of.get(case, "?") for case in row["training_cases"].split())
                text = ", ".join(f"{style} {n}" for style, n in sorted(counts.items())) or "whole fold"
            styles.setdefault((row["arm"], int(row["labels"])), []).append(text)
    return {run: " / ".join(texts) for run, texts in styles.items()}


def _only(dice: dict, cases: set) -> dict:
    return {case: value for case, value in dice.items() if case in cases}


def style_markdown(dice: dict, style_of: dict, labeled: list[str], trained_on: dict) -> str:
    """A table of Dice per style and run (with the styles it trained on), and the paired comparisons on the
    styles no labeled case has."""
    styles = sorted(set(style_of.values()), key=lambda s: (s not in labeled, s))
    other = {case for case, style in style_of.items() if style not in labeled}
    seen = {case for case, style in style_of.items() if style in labeled}
    head = ["trained on"] + [f"{s} (labeled)" if s in labeled and other else s for s in styles]
    head += ["labeled styles", "other styles"] if other else ["all"]
    # the dataset's labeled cases; a small fraction's subset may still miss a style (its "trained on")
    shift = f"labeled cases in {', '.join(labeled)} only" if other else "labeled cases in every style"
    lines = [f"# Dice on the test set by appearance style ({shift})", "", "| run | " + " | ".join(head) + " |"]
    lines.append("|---" * (len(head) + 1) + "|")
    for (arm, labels), per_case in dice.items():
        cells = [trained_on.get((arm, labels), "?")]
        cells += [
            f"{np.mean([d for c, d in per_case.items() if style_of.get(c) == s] or [np.nan]):.3f}" for s in styles
        ]
        cells += [mean_ci(_only(per_case, group).values()).text() for group in ((seen, other) if other else (seen,))]
        lines.append(f"| {arm_title(arm)} {labels}% | " + " | ".join(cells) + " |")
    if other:
        lines += ["", "Paired on the other styles' cases (Δ mean Dice [95% CI], cases improved):", ""]
        for (arm, labels), per_case in dice.items():
            twin = ARMS[arm].twin if arm in ARMS else None
            for b in ((twin, labels), (REFERENCE_ARM, REFERENCE_LABELS)):
                if b in dice and b != (arm, labels):  # absent runs and the reference itself are left out
                    p = paired(_only(per_case, other), _only(dice[b], other))
                    lines.append(
                        f"- {arm_title(arm)} {labels}% − {arm_title(b[0])} {b[1]}%: "
                        f"{p.difference.text(signed=True)}, {p.improved} of {p.n}"
                    )
    return "\n".join(lines) + "\n"


def write_style_report(report_dir: Path, phantoms_json: Path) -> Path:
    """``report_dir/styles.md`` from the benchmark's cases.csv beside it; returns its path."""
    for needed in (phantoms_json, report_dir / "cases.csv"):
        if not needed.is_file():
            raise UserError(
                f"{needed} does not exist; expected a phantom dataset's phantoms.json and a report's cases.csv."
            )
    meta = json.loads(phantoms_json.read_text())
    style_of = {case: c["style"] for case, c in meta["cases"].items()}
    tests = {case for case, c in meta["cases"].items() if c["split"] == "ts"}
    labeled = list(meta.get("labeled_styles", meta["styles"]))
    dice = {run: _only(per_case, tests) for run, per_case in case_dice(report_dir / "cases.csv").items()}
    trained_on = training_styles(report_dir / "results.csv", style_of) if (report_dir / "results.csv").is_file() else {}
    out = report_dir / "styles.md"
    write_bytes_atomic(out, style_markdown(dice, _only(style_of, tests), labeled, trained_on).encode())
    return out


@console_script("style_report")
def main(argv=None):
    parser = OneSentenceParser(prog="style_report", description="Write REPORT_DIR/styles.md: test Dice by style.")
    parser.add_argument("report_dir", type=Path, help="a benchmark's output folder (its cases.csv)")
    parser.add_argument("phantoms_json", type=Path, help="the phantom dataset's phantoms.json")
    args = parser.parse_args(argv)
    print(write_style_report(args.report_dir, args.phantoms_json))


if __name__ == "__main__":
    sys.exit(main())
