"""The band charts' geometry and words, shared by the HTML report, the PDF and the dashboard's charts.

A band chart shows one evidence line, one row per class: the passing side of the calibrated threshold
shaded green and the failing side red, the healthy models' band and edge, the threshold, and this run's
value with its interval, on one axis zoomed to those numbers. :func:`bands` lays the rows out; each
renderer only draws them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from verification.verdict import LineResult

__all__ = ["STATUS_RGB", "Band", "bands", "chart_number", "status_hex", "ticks"]

STATUS_RGB: dict[str, tuple[int, int, int]] = {
    "pass": (46, 125, 50),
    "fail": (198, 40, 40),
    "inconclusive": (178, 106, 0),
    "not_assessable": (119, 119, 119),
    "uninformative": (119, 119, 119),
}
"""The colour of a status in the charts (grey for one not listed)."""


def status_hex(status: str) -> str:
    """The status colour as ``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*STATUS_RGB.get(status, (119, 119, 119)))


def chart_number(v: float) -> str:
    """A number for a chart label: three decimals (the charts' quantities live in about [-1, 1]); large
    values (a KL) with four significant digits."""
    return f"{v:.3f}" if abs(v) < 1000 else f"{v:.4g}"


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick positions in [lo, hi]: a step of 1, 2, 2.5 or 5 × 10^k."""
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step) + 1)]


@dataclass(frozen=True)
class Band:
    """One class of one evidence line, laid out for a band chart.

    ``value`` (with its interval ``low`` … ``high``) is this run's number, ``threshold`` the calibrated edge
    (passing side: above it when ``higher_is_better``), ``healthy_edge`` the worst healthy model's class mean
    and ``healthy`` the band of the healthy models' class means (lowest, highest; None when the line does not
    report them); ``axis`` the zoomed range that holds all of them with a margin."""

    line: str
    class_name: str
    status: str
    value: float
    low: float | None
    high: float | None
    threshold: float | None
    higher_is_better: bool
    healthy_edge: float | None
    axis: tuple[float, float]
    healthy: tuple[float, float] | None = None

    def sides(
        self, left: float, right: float, x: Callable[[float], float]
    ) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The (passing, failing) spans of the row in drawing units, ``x`` mapping a value onto
        [left, right]; None without a threshold."""
        if self.threshold is None:
            return None
        t = x(self.threshold)
        return ((t, right), (left, t)) if self.higher_is_better else ((left, t), (t, right))

    def legend(self) -> list[str]:
        """The healthy numbers in words, written at the right of the row where no mark can hide them."""
        out = []
        if self.healthy is not None:
            out.append(f"healthy models {chart_number(self.healthy[0])} to {chart_number(self.healthy[1])}")
        if self.healthy_edge is not None:
            out.append(f"healthy edge {chart_number(self.healthy_edge)}")
        return out

    def threshold_words(self) -> str:
        """The threshold's label, with the passing direction (assumes a threshold)."""
        return f"threshold {'≥' if self.higher_is_better else '≤'} {chart_number(float(self.threshold or 0))}"

    def value_words(self) -> str:
        return f"this run {chart_number(self.value)}"


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _span(lo: Any, hi: Any) -> tuple[float, float] | None:
    a, b = _finite(lo), _finite(hi)
    return None if a is None or b is None else (min(a, b), max(a, b))


def bands(line: LineResult) -> list[Band]:
    """The band-chart rows of a :class:`~verification.verdict.LineResult`: every class with a measured value,
    on one axis zoomed to the numbers (value, interval, threshold, healthy edge of every class) plus 8 % of
    their span on each side."""
    rows = [(c, v) for c in line.per_class if (v := _finite(c.value)) is not None]
    if not rows:
        return []
    pts = [
        f
        for c, _ in rows
        for v in (
            c.value,
            c.low,
            c.high,
            c.threshold,
            c.numbers.get("healthy_edge"),
            c.numbers.get("healthy_low"),
            c.numbers.get("healthy_high"),
        )
        if (f := _finite(v)) is not None
    ]
    lo, hi = min(pts), max(pts)
    span = hi - lo
    pad = 0.08 * span if span > 0 else max(0.05 * abs(hi), 0.05)
    axis = (lo - pad, hi + pad)
    return [
        Band(
            line=line.key,
            class_name=c.class_name,
            status=c.status,
            value=value,
            low=_finite(c.low),
            high=_finite(c.high),
            threshold=_finite(c.threshold),
            higher_is_better=bool(c.higher_is_better),
            healthy_edge=_finite(c.numbers.get("healthy_edge")),
            axis=axis,
            healthy=_span(c.numbers.get("healthy_low"), c.numbers.get("healthy_high")),
        )
        for c, value in rows
    ]
