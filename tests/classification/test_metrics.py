"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnunetv2_vismae.classification.metrics import binary_auc, compute_metrics, roc_auc


def test_binary_auc_counts_pairs_and_half_ties():
    y = np.array([False, False, True, True])
    assert binary_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert binary_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert binary_auc(y, np.array([0.1, 0.5, 0.5, 0.9])) == pytest.approx(3.5 / 4)  # one tied pair
    assert math.isnan(binary_auc(np.array([True, True]), np.array([0.1, 0.2])))


def test_multiclass_auc_is_the_one_vs_rest_macro_mean():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.6, 0.3], [0.2, 0.1, 0.7]])
    expected = np.mean([binary_auc(y == c, p[:, c]) for c in range(3)])
    assert roc_auc(y, p) == pytest.approx(expected)
    assert expected < 1.0


def test_accuracy_balanced_accuracy_f1_and_confusion_matrix():
    y = [0, 0, 0, 1]  # imbalanced: predicting the majority looks good on accuracy
    p = np.array([[0.9, 0.1]] * 4)
    m = compute_metrics(y, p, ["neg", "pos"])
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.5
    assert m["confusion_matrix"] == [[3, 0], [1, 0]]
    assert m["f1_macro"] == pytest.approx((6 / 7 + 0.0) / 2)
    assert m["per_class"]["pos"] == {"support": 1, "recall": 0.0, "precision": None, "f1": 0.0}
    assert m["auc"] == 0.5


def test_a_predicted_class_without_images_counts_for_f1_but_not_for_balanced_accuracy_or_auc(recwarn):
    y = [0, 0, 1, 1]
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])  # "c" predicted, never true
    m = compute_metrics(y, p, ["a", "b", "c"])
    assert m["balanced_accuracy"] == 0.75  # (1/2 + 2/2) / 2
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["per_class"]["c"] == {"support": 0, "recall": None, "precision": 0.0, "f1": 0.0}
    assert m["auc"] == pytest.approx((0.75 + 1.0) / 2)  # "c" has no positives: left out
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert not recwarn.list
