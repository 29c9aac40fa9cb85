"""The statistics behind every line: intervals, the three-way judgement against a threshold, AUROC.

* :func:`wilson` — Wilson score interval of a proportion k/n (Wilson 1927): for z the normal quantile,
  centre (p̂ + z²/2n) / (1 + z²/n), half-width z √(p̂(1−p̂)/n + z²/4n²) / (1 + z²/n).
* :func:`mean_interval` — Student-t interval of a mean: x̄ ± t_{(1+c)/2, n−1} s / √n.
* :func:`judge` — pass when the whole interval lies on the good side of the threshold, fail when the whole
  interval lies on the bad side, inconclusive otherwise: a line fails only when the evidence clearly crosses.
* :func:`auroc` — area under the ROC curve of "bad" vs "healthy" values (Mann–Whitney U / (n₁ n₀), ties ½).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

from verification.verdict.records import Status


def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2.0))


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(p̂, low, high) of k successes in n trials; (nan, 0, 1) when n is 0."""
    if n <= 0:
        return float("nan"), 0.0, 1.0
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values (Student t); NaNs when fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    se = float(v.std(ddof=1)) / math.sqrt(v.size)
    t = float(_st.t.ppf(0.5 + confidence / 2.0, v.size - 1))
    return m, m - t * se, m + t * se


def judge(low: float, high: float, threshold: float, higher_is_better: bool) -> Status:
    """pass / fail / inconclusive of an interval against a threshold (see the module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)) or not math.isfinite(threshold):
        return "inconclusive"
    if higher_is_better:
        if low >= threshold:
            return "pass"
        if high < threshold:
            return "fail"
    else:
        if high <= threshold:
            return "pass"
        if low > threshold:
            return "fail"
    return "inconclusive"


def auroc(
    bad: Sequence[float] | np.ndarray, healthy: Sequence[float] | np.ndarray, higher_is_better: bool
) -> float:
    """Probability that a known-bad value is worse than a healthy one (ties count ½); NaN without both."""
    b = np.asarray(bad, dtype=np.float64)
    h = np.asarray(healthy, dtype=np.float64)
    b, h = b[np.isfinite(b)], h[np.isfinite(h)]
    if b.size == 0 or h.size == 0:
        return float("nan")
    if higher_is_better:  # worse = lower
        b, h = -b, -h
    ranks = _st.rankdata(np.concatenate([h, b]))
    u = ranks[h.size :].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (b.size * h.size))
