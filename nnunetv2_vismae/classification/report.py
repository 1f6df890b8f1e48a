"""Files a run or a prediction leaves behind: metrics.json, report.md, confusion_matrix.png,
training_curve.png, history.csv and predictions CSVs, each written atomically."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_vismae.classification.data import Sample
from nnunetv2_vismae.io.atomic import write_bytes_atomic
from nnunetv2_vismae.io.figures import new_figure, png_bytes
from nnunetv2_vismae.io.report import csv_text, markdown_table, write_files

HEADLINE = (
    ("auc", "AUC"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("f1_macro", "F1 (macro)"),
)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1; None for one value) over seeds."""

    mean: float
    sd: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "–"
        sd = "–" if self.sd is None else f"{self.sd:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {sd}"


def stat(values) -> Stat:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return Stat(math.nan, None, 0)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return Stat(float(np.mean(values)), sd, len(values))


def json_ready(value):
    """NaN -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def number(value, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_predictions_csv(path: Path, samples: list[Sample], probabilities: np.ndarray, classes: list[str]) -> None:
    """image, label (when known), one probability column per class, predicted class."""
    with_labels = any(s.label is not None for s in samples)
    header = ["image"] + (["label"] if with_labels else []) + [f"p_{c}" for c in classes] + ["predicted"]
    rows = [
        [s.path] + ([s.label] if with_labels else []) + [f"{p:.6f}" for p in probs] + [classes[int(probs.argmax())]]
        for s, probs in zip(samples, probabilities)
    ]
    write_bytes_atomic(path, csv_text(header, rows).encode())


def write_history_csv(path: Path, history: list[dict]) -> None:
    keys = ["epoch", "lr", "train_loss", "val_loss", "val_auc", "val_accuracy"]
    write_bytes_atomic(path, csv_text(keys, [[h[k] for k in keys] for h in history]).encode())


def confusion_png(matrix: list[list[int]], classes: list[str]) -> bytes:
    figure = new_figure((1.6 + 0.9 * len(classes), 1.2 + 0.9 * len(classes)))
    ax = figure.subplots()
    values = np.asarray(matrix)
    ax.imshow(values, cmap="Blues")
    for (i, j), count in np.ndenumerate(values):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > values.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return png_bytes(figure)


def write_training_curve(path: Path, history: list[dict], best_epoch: int) -> None:
    """Losses (left) and validation AUC / accuracy (right) per epoch, the chosen epoch marked."""
    figure = new_figure((9.6, 3.8))
    left, right = figure.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    left.plot(epochs, [h["train_loss"] for h in history], label="training loss")
    left.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    right.plot(epochs, [h["val_auc"] for h in history], label="validation AUC")
    right.plot(epochs, [h["val_accuracy"] for h in history], label="validation accuracy")
    for ax in (left, right):
        ax.axvline(best_epoch, color="gray", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    right.set_ylim(0, 1.02)
    write_bytes_atomic(path, png_bytes(figure))


def report_markdown(metrics: dict, title: str, settings: dict) -> str:
    classes = metrics["classes"]
    per_class = [
        [c, p["support"], number(p["recall"]), number(p["precision"]), number(p["f1"])]
        for c, p in metrics["per_class"].items()
    ]
    confusion = [[f"**{c}**", *row] for c, row in zip(classes, metrics["confusion_matrix"])]
    lines = [f"# {title}", "", f"{metrics['num_images']} images, classes {', '.join(classes)}."]
    if "best_epoch" in metrics:
        lines.append(f"Best epoch (highest validation AUC): {metrics['best_epoch']}.")
    lines += [
        "",
        *markdown_table(["metric", "value"], [[label, number(metrics[key])] for key, label in HEADLINE]),
        "AUC: one-vs-rest, macro-averaged over classes for more than two classes; F1: macro.",
        "",
        "## Per class",
        "",
        *markdown_table(["class", "images", "recall", "precision", "F1"], per_class),
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        *markdown_table(["", *classes], confusion),
        "## Settings",
        "",
        "```json",
        json.dumps(json_ready(settings), indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_metrics(folder: Path, metrics: dict, title: str, settings: dict) -> None:
    """metrics.json, report.md and confusion_matrix.png in ``folder``."""
    folder = Path(folder)
    write_files(
        {
            folder / "metrics.json": json.dumps(json_ready(metrics), indent=2).encode(),
            folder / "report.md": report_markdown(metrics, title, settings).encode(),
            folder / "confusion_matrix.png": confusion_png(metrics["confusion_matrix"], metrics["classes"]),
        }
    )
