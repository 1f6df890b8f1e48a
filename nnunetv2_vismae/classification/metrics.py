"""Classification metrics from true labels and predicted probabilities (numpy only).

AUC is the Mann-Whitney statistic (ties count one half); for more than two classes it is the
one-vs-rest AUC averaged over the classes (macro), each class that has both positives and negatives
in the data counting once. Balanced accuracy is the mean recall over the classes present; F1 is
the macro F1 over the classes present in the labels or the predictions.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata


def binary_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative); NaN without both kinds."""
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary: AUC of the second class's probability. Multi-class: one-vs-rest macro AUC."""
    num_classes = probabilities.shape[1]
    if num_classes == 2:
        return binary_auc(y_true == 1, probabilities[:, 1])
    per_class = [binary_auc(y_true == c, probabilities[:, c]) for c in range(num_classes)]
    per_class = [a for a in per_class if not math.isnan(a)]
    return float(np.mean(per_class)) if per_class else math.nan


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def compute_metrics(y_true, probabilities, classes: list[str]) -> dict:
    """JSON-ready metrics: auc, accuracy, balanced_accuracy, f1_macro, per-class recall/precision/F1,
    the confusion matrix and the number of images."""
    y_true, probabilities = np.asarray(y_true, dtype=np.int64), np.asarray(probabilities, dtype=np.float64)
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    support, predicted, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    recall = np.divide(hits, support, out=np.full(len(classes), np.nan), where=support > 0)
    precision = np.divide(hits, predicted, out=np.full(len(classes), np.nan), where=predicted > 0)
    f1 = np.divide(2 * hits, support + predicted, out=np.full(len(classes), np.nan), where=support + predicted > 0)
    return {
        "num_images": len(y_true),
        "auc": roc_auc(y_true, probabilities),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else math.nan,
        "balanced_accuracy": float(np.nanmean(recall)) if (support > 0).any() else math.nan,
        "f1_macro": float(np.nanmean(f1)) if (support + predicted > 0).any() else math.nan,
        "per_class": {name: {"support": int(support[i]), "recall": _json(recall[i]),
                             "precision": _json(precision[i]), "f1": _json(f1[i])}
                      for i, name in enumerate(classes)},
        "classes": list(classes),
        "confusion_matrix": matrix.tolist(),
    }


def _json(value: float):
    return None if math.isnan(value) else float(value)
