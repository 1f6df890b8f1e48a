"""``nnUNetv2_vismae_classify predict``: apply a saved model folder to a CSV or a folder of images.

Writes ``predictions.csv`` (one probability column per class and the predicted class); when every
image has a label (a CSV label column, or class subfolders) also metrics.json, report.md and
confusion_matrix.png, computed exactly as in training's validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunetv2_vismae.classification import report
from nnunetv2_vismae.classification.data import check_known_labels, load_samples
from nnunetv2_vismae.classification.inference import predict_logits
from nnunetv2_vismae.classification.inputs import InputSpec, load_inputs
from nnunetv2_vismae.classification.metrics import compute_metrics
from nnunetv2_vismae.classification.model import load_model_folder
from nnunetv2_vismae.device import resolve_device


def predict(model_dir: str, source: str, out: str, device: str = "cpu", batch_size: int = 32, log=print) -> dict | None:
    """Write the predictions (and metrics, when labels are known); return the metrics or None."""
    torch_device = resolve_device(device)
    model, description = load_model_folder(model_dir)
    classes = description["classes"]
    samples = load_samples(source, require_labels=False)
    check_known_labels(samples, classes)
    inputs = load_inputs(samples, InputSpec.from_json(description["input"]))
    probabilities = predict_logits(model.to(torch_device), inputs, torch_device, batch_size).softmax(1).numpy()
    out = Path(out)
    report.write_predictions_csv(out / "predictions.csv", samples, probabilities, classes)
    log(f"Predictions: {out / 'predictions.csv'} ({len(samples)} images).")
    if any(s.label is None for s in samples):
        return None
    metrics = compute_metrics(np.array([classes.index(s.label) for s in samples]), probabilities, classes)
    report.write_metrics(
        out,
        metrics,
        f"Predictions of {model_dir} on {source}",
        {"model": str(Path(model_dir).resolve()), "input": str(source), "device": device},
    )
    log(
        f"AUC {report.number(metrics['auc'])}, accuracy {report.number(metrics['accuracy'])}, balanced accuracy "
        f"{report.number(metrics['balanced_accuracy'])}, F1 {report.number(metrics['f1_macro'])}: {out / 'report.md'}"
    )
    return metrics
