"""``nnUNetv2_vismae_classify benchmark``: label efficiency of the pretrained encoder.

For every arm (``pretrained``: the checkpoint's encoder; ``scratch``: the same architecture and
input normalization from random weights), label percentage and seed it trains one run in
``OUT/runs/{arm}_labels{P}_seed{S}`` (a finished run is only re-reported, an interrupted one
resumes), then writes ``results.csv``, ``report.md`` and ``label_efficiency.png``, like the
segmentation benchmark. A seed picks the validation split, the nested label subsets, the
initialisation and the augmentation, so both arms at one seed see exactly the same images.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from nnunetv2_vismae.classification.model import read_pretrained
from nnunetv2_vismae.classification.predict import predict
from nnunetv2_vismae.classification.report import number, stat
from nnunetv2_vismae.classification.train import MODEL_DIR, TrainSettings, train
from nnunetv2_vismae.io.figures import new_figure, png_bytes
from nnunetv2_vismae.io.report import csv_text, markdown_table, write_files

METRICS = (("auc", "AUC"), ("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("f1_macro", "F1"))
MATCH_MARGIN = 0.01  # "matches": mean AUC >= from-scratch@100% mean AUC - MATCH_MARGIN
ARM_TITLES = {"pretrained": "pretrained encoder", "scratch": "from scratch"}


def arm_settings(base: TrainSettings, arm: str, labels: int, seed: int, out: Path) -> TrainSettings:
    """The pretrained arm loads the checkpoint; the scratch arm copies its architecture and
    normalization and starts from random weights."""
    run = replace(base, labels=labels, seed=seed, out=str(out / "runs" / f"{arm}_labels{labels}_seed{seed}"))
    if arm == "pretrained":
        return run
    _, config, norm = read_pretrained(base.pretrained)
    return replace(run, pretrained=None, encoder=config.to_json(), normalization=norm)


def run_one(settings: TrainSettings, test: str | None) -> dict:
    """Train (or resume / re-report) one run; its scores on the test set if given, else validation."""
    metrics = train(settings, log=lambda *_: None)
    if test:
        metrics = predict(
            str(Path(settings.out) / MODEL_DIR),
            test,
            str(Path(settings.out) / "test"),
            settings.device,
            settings.batch_size,
            log=lambda *_: None,
        )
    return metrics


def benchmark(
    base: TrainSettings,
    arms: list[str],
    labels: list[int],
    seeds: list[int],
    out: Path,
    test: str | None = None,
    command: str = "",
) -> list[dict]:
    rows = []
    for arm in arms:
        for percent in sorted(labels):
            for seed in seeds:
                settings = arm_settings(base, arm, percent, seed, out)
                metrics = run_one(settings, test)
                rows.append({"arm": arm, "labels": percent, "seed": seed, **{key: metrics[key] for key, _ in METRICS}})
                print(
                    f"{arm} {percent}% seed {seed}: AUC {number(metrics['auc'])}, "
                    f"accuracy {number(metrics['accuracy'])}"
                )
    write_outputs(out, rows, test, command)
    return rows


def grouped(rows: list[dict], key: str) -> dict:
    """(arm, labels) -> Stat of ``key`` over seeds, in the order found."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["arm"], r["labels"]), []).append(r[key])
    return {k: stat(v) for k, v in groups.items()}


def matching_sentence(rows: list[dict]) -> str:
    auc = grouped(rows, "auc")
    ref = auc.get(("scratch", 100))
    pretrained = {p: s for (a, p), s in auc.items() if a == "pretrained"}
    if ref is None or math.isnan(ref.mean) or not pretrained:
        return "The comparison needs both arms, with the from-scratch arm at 100% labels."
    matching = [p for p, s in pretrained.items() if s.mean >= ref.mean - MATCH_MARGIN]
    if not matching:
        return (
            f"The pretrained encoder does not match training from scratch with 100% labels (AUC "
            f"{ref.mean:.4f}) at any label fraction tested."
        )
    p = min(matching)
    return (
        f"The pretrained encoder matches training from scratch with 100% labels (AUC {ref.mean:.4f}) "
        f"from {p}% of the labels on (AUC {pretrained[p].mean:.4f}; 'matches' = at least that minus "
        f"{MATCH_MARGIN})."
    )


def report_markdown(rows: list[dict], test: str | None, command: str) -> str:
    stats = {key: grouped(rows, key) for key, _ in METRICS}
    scored_on = f"test set {test}" if test else "validation set"
    table = [
        [ARM_TITLES.get(arm, arm), f"{p}%", auc.n, *(stats[key][(arm, p)].text(4) for key, _ in METRICS)]
        for (arm, p), auc in stats["auc"].items()
    ]
    lines = [
        "# Classification label efficiency",
        "",
        (
            f"Scores on the {scored_on}; mean ± sd over seeds (sample sd, '–' for one seed). The best "
            "epoch of every run is chosen on its validation set."
        ),
        "",
        matching_sentence(rows),
        "",
        *markdown_table(["arm", "labels", "runs", *(t for _, t in METRICS)], table),
        "## Command",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def plot_png(rows: list[dict], scored_on: str) -> bytes:
    """AUC against label fraction, one line per arm, error bars = sd over seeds."""
    figure = new_figure()
    ax = figure.subplots()
    auc = grouped(rows, "auc")
    for arm in dict.fromkeys(r["arm"] for r in rows):
        points = sorted((p, s) for (a, p), s in auc.items() if a == arm)
        ax.errorbar(
            [p for p, _ in points],
            [s.mean for _, s in points],
            yerr=[s.sd or 0.0 for _, s in points],
            marker="o",
            capsize=4,
            label=ARM_TITLES.get(arm, arm),
        )
    ax.set_xticks(sorted({r["labels"] for r in rows}))
    ax.set_xlabel("Labelled training images (% of every class)")
    ax.set_ylabel(f"AUC ({scored_on}, mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    return png_bytes(figure)


def write_outputs(out: Path, rows: list[dict], test: str | None, command: str) -> None:
    header = ["arm", "labels", "seed", *(key for key, _ in METRICS)]
    write_files(
        {
            out / "results.csv": csv_text(header, [[r[k] for k in header] for r in rows]).encode(),
            out / "report.md": report_markdown(rows, test, command).encode(),
            out / "label_efficiency.png": plot_png(rows, "test set" if test else "validation set"),
        }
    )
