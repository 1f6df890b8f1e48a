"""Deterministic, nested subsets of training cases for label-efficiency runs: a fold's cases
(``_labels{P}`` trainers) or a class's images (classification)."""

from __future__ import annotations

import hashlib
import math

import numpy as np

LABEL_SUBSET_FILE = "label_subset.json"  # a _labels{P} run's subset, in its fold folder


def subset_seed(dataset_name: str, fold, seed: int = 0) -> int:
    """Seed 0 is the draw every ``_labels{P}`` trainer makes; others give independent draws."""
    key = f"{dataset_name}/fold_{fold}" + (f"/seed_{seed}" if seed else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little")


def is_label_percentage(value: int) -> bool:
    """Whether ``value`` is a label percentage, 1 to 100 of the training cases: checked here only."""
    return 1 <= value <= 100


def label_subset(train_cases: list[str], percent: int, dataset_name: str, fold, seed: int = 0) -> list[str]:
    """The first ``ceil(percent% of n)`` cases (at least one) of a seeded permutation.

    The permutation depends only on the dataset, the fold, the seed and the set of cases, so every
    smaller subset lies inside every larger one, and every arm sees the same cases.
    """
    if not is_label_percentage(percent):
        raise ValueError(f"Label percentage must be between 1 and 100, got {percent}.")
    cases = sorted(train_cases)
    order = np.random.default_rng(subset_seed(dataset_name, fold, seed)).permutation(len(cases))
    count = max(1, math.ceil(len(cases) * percent / 100))
    return sorted(cases[i] for i in order[:count])
