"""Classification metrics from true labels and predicted probabilities, computed by scikit-learn.

AUC is the area under the ROC curve (the Mann-Whitney statistic: ties count one half); for more
than two classes it is the one-vs-rest AUC averaged over the classes (macro), each class that has
both positives and negatives in the data counting once. Balanced accuracy is the mean recall over
the classes present; F1 is the macro F1 over the classes present in the labels or the predictions.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics


def binary_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative); NaN without both kinds."""
    if is_positive.all() or not is_positive.any():
        return math.nan
    return float(metrics.roc_auc_score(is_positive, score))


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary: AUC of the second class's probability. Multi-class: one-vs-rest macro AUC."""
    num_classes = probabilities.shape[1]
    if num_classes == 2:
        return binary_auc(y_true == 1, probabilities[:, 1])
    per_class = [binary_auc(y_true == c, probabilities[:, c]) for c in range(num_classes)]
    per_class = [a for a in per_class if not math.isnan(a)]
    return float(np.mean(per_class)) if per_class else math.nan


def compute_metrics(y_true, probabilities, classes: list[str]) -> dict:
    """JSON-ready metrics: auc, accuracy, balanced_accuracy, f1_macro, per-class recall/precision/F1,
    the confusion matrix and the number of images."""
    y_true, probabilities = np.asarray(y_true, dtype=np.int64), np.asarray(probabilities, dtype=np.float64)
    y_pred, labels = probabilities.argmax(axis=1), np.arange(len(classes))
    # NaN for a class without images (recall), without predictions (precision) or without either (F1)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=np.nan
    )
    with warnings.catch_warnings():  # it warns that a predicted class without images does not count: as intended
        warnings.simplefilter("ignore", UserWarning)
        balanced_accuracy = metrics.balanced_accuracy_score(y_true, y_pred)
    return {
        "num_images": len(y_true),
        "auc": roc_auc(y_true, probabilities),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy),
        "f1_macro": float(metrics.f1_score(y_true, y_pred, average="macro")),
        "per_class": {
            name: {
                "support": int(support[i]),
                "recall": _json(recall[i]),
                "precision": _json(precision[i]),
                "f1": _json(f1[i]),
            }
            for i, name in enumerate(classes)
        },
        "classes": list(classes),
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _json(value: float):
    return None if math.isnan(value) else float(value)
