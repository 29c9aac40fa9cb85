"""The dashboard's band chart (ui.evidence.band_chart) shades the passing side of each class's threshold green
and the failing side red, on the side the reports use (verification.report's Band.sides)."""

from __future__ import annotations

from dataclasses import replace

from tests.app.report_fixture import E3
from ui import evidence
from verification.report import bands

GREEN, RED = "rgba(46,158,91,0.22)", "rgba(217,83,79,0.18)"


def _spans(line: object) -> list[tuple[float, float, str]]:
    fig = evidence.band_chart(line)
    assert fig is not None
    return [(s.x0, s.x1, s.fillcolor) for s in fig.layout.shapes if s.type == "rect" and s.layer == "below"]


def test_lower_is_better_passes_below_the_threshold() -> None:
    lo, hi = bands(E3)[0].axis
    # E3's classes (normal, nodule): threshold 0.15, lower is better
    assert _spans(E3) == [(lo, 0.15, GREEN), (0.15, hi, RED)] * 2


def test_higher_is_better_passes_above_the_threshold() -> None:
    flipped = replace(E3, per_class=tuple(replace(c, higher_is_better=True) for c in E3.per_class))
    lo, hi = bands(flipped)[0].axis
    assert _spans(flipped) == [(0.15, hi, GREEN), (lo, 0.15, RED)] * 2
