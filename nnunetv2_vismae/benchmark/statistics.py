"""The benchmark's statistics over validation cases: bootstrap confidence intervals and paired tests.

A case is the unit: each case is validated in one fold, so pooling folds pools cases. A mean gets
a 95% bootstrap confidence interval over cases (scipy's BCa bootstrap, seeded so that a report is
reproducible); a comparison of two arms is paired on the cases both scored: the CI of the mean
per-case difference, the Wilcoxon signed-rank p-value and how many cases improved.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
DEFAULT_MARGIN = 0.02  # Dice: "non-inferior" when the paired CI's lower bound is above -margin
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` cases with its confidence interval (None below two cases)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def text(self, digits: int = 3, signed: bool = False) -> str:
        if self.n == 0:
            return "–"
        sign = "+" if signed else ""
        value = f"{self.mean:{sign}.{digits}f}"
        if self.low is None:
            return value
        return f"{value} [{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]"


@dataclass(frozen=True)
class Paired:
    """``a - b`` on the cases both scored."""

    difference: Estimate
    p_value: float | None  # Wilcoxon signed-rank, two-sided; None below two cases
    improved: int  # cases where a > b

    @property
    def n(self) -> int:
        return self.difference.n


def mean_ci(values) -> Estimate:
    """Mean and 95% bootstrap CI of the finite values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if x.size == 0:
        return Estimate(math.nan, None, None, 0)
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(mean, None, None, 1)
    if np.ptp(x) <= 1e-12:  # every resample has the same mean (up to rounding); BCa would divide by zero
        return Estimate(mean, mean, mean, int(x.size))
    result = stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="BCa",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = result.confidence_interval
    return Estimate(mean, float(low), float(high), int(x.size))


def wilcoxon_p(differences: np.ndarray) -> float | None:
    if differences.size < 2:
        return None
    if not np.any(differences):  # no case changed: nothing to rank
        return 1.0
    with warnings.catch_warnings():  # scipy warns about ties and small samples; the p-value stands
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(differences).pvalue)


def paired(a: dict, b: dict) -> Paired:
    """Compare per-case values ``a`` and ``b`` (case -> value) on the cases both have finite values for."""
    cases = [c for c in a if c in b and math.isfinite(a[c]) and math.isfinite(b[c])]
    differences = np.asarray([a[c] - b[c] for c in cases], dtype=float)
    return Paired(mean_ci(differences), wilcoxon_p(differences), int((differences > 0).sum()))


def non_inferior(comparison: Paired, margin: float) -> bool:
    """The lower CI bound of ``arm - reference`` lies above ``-margin``."""
    low = comparison.difference.low
    return low is not None and low > -margin


def better(comparison: Paired) -> bool:
    """The CI of ``a - b`` lies above 0 (a tie, or a CI that touches 0, is not a win)."""
    low = comparison.difference.low
    return low is not None and low > 0


def worse(comparison: Paired) -> bool:
    high = comparison.difference.high
    return high is not None and high < 0
