"""Plain words for one image: what the verdict's numbers found on it and why, in one sentence.

Pure functions over the verdict's records (:class:`~verification.verdict.records.ImageEvidence`,
:class:`~verification.verdict.records.VerificationReport`) and, where there is one, the image's attention map
and anatomy mask. Every clause of a sentence is backed by a number that :class:`Explanation` carries beside it
(``numbers``), and a judgement word ("beyond", "within") appears only where the report has a calibrated
threshold for that quantity and that class; without one the number is stated and not judged.

* :func:`locate` — where a map puts its attention: the peak and the centre of mass as fractions of the
  image, the region of the image they fall in (a 3 × 3 grid: "upper-left corner", "centre", ...), and with an
  anatomy mask the share of the map's energy outside it and whether the peak lies inside it.
* :func:`thresholds` — the calibrated edge of each per-image quantity per class, read from the report's lines
  (E3's lead sub-measure per class, E4's finding drop, E2's localisation gain).
* :func:`explain_image` — the sentence, from the image's record, its location and those thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from verification.verdict.records import ImageEvidence, VerificationReport

__all__ = ["Explanation", "MapLocation", "Threshold", "explain_image", "locate", "region_words", "thresholds"]

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "centre", "right")


@dataclass(frozen=True)
class MapLocation:
    """Where an attention map (h, w) puts its attention.

    ``peak`` and ``centre`` are (x, y) fractions of the image width and height (0, 0 = top-left); ``region``
    is the peak's place on a 3 × 3 grid of the image in words (:func:`region_words`); ``outside_share`` the
    share of the map's energy outside the anatomy mask and ``peak_inside`` whether the peak pixel lies in it
    (both None without a mask).
    """

    peak: tuple[float, float]
    centre: tuple[float, float]
    region: str
    outside_share: float | None = None
    peak_inside: bool | None = None


@dataclass(frozen=True)
class Threshold:
    """A calibrated edge of a per-image quantity for one class (``higher_is_better``: which side passes)."""

    value: float
    higher_is_better: bool


@dataclass(frozen=True)
class Explanation:
    """One image's sentence and the numbers behind each of its clauses (name in words → value)."""

    sentence: str
    numbers: Mapping[str, float | str] = field(default_factory=dict)


def region_words(x: float, y: float) -> str:
    """The place of the point (x, y) (fractions of width and height) on a 3 × 3 grid of the image, with its
    preposition: "in the upper-left corner", "on the left side", "at the top centre", "in the centre"."""
    col = _COLS[min(2, max(0, int(x * 3)))]
    row = _ROWS[min(2, max(0, int(y * 3)))]
    if row == "middle" and col == "centre":
        return "in the centre"
    if row == "middle":
        return f"on the {col} side"
    if col == "centre":
        return "at the top centre" if row == "upper" else "at the bottom centre"
    return f"in the {row}-{col} corner"


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask resampled to ``shape`` by nearest neighbour (each target pixel's centre)."""
    m = np.asarray(mask).astype(bool)
    if m.shape == shape:
        return m
    rows = np.minimum((np.arange(shape[0]) + 0.5) * m.shape[0] / shape[0], m.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * m.shape[1] / shape[1], m.shape[1] - 1).astype(int)
    return m[np.ix_(rows, cols)]


def locate(cam: np.ndarray, anatomy: np.ndarray | None = None) -> MapLocation | None:
    """Where ``cam`` (h, w, non-negative) puts its attention; None for an all-zero or non-finite map.

    The peak is the maximum (the first in row-major order on ties); the centre is the energy-weighted mean
    position; positions are pixel centres as fractions of the map's size. ``anatomy`` (any size, resampled
    to the map by nearest neighbour) gives the outside share and whether the peak is inside."""
    a = np.asarray(cam, dtype=np.float64)
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        return None
    a = np.clip(a, 0.0, None)
    total = float(a.sum())
    if total <= 0.0:
        return None
    h, w = a.shape
    r, c = np.unravel_index(int(np.argmax(a)), a.shape)
    peak = ((c + 0.5) / w, (r + 0.5) / h)
    ys, xs = np.mgrid[0:h, 0:w]
    centre = (float(((xs + 0.5) * a).sum() / total / w), float(((ys + 0.5) * a).sum() / total / h))
    outside = inside = None
    if anatomy is not None:
        m = _resize_mask(anatomy, (h, w))
        if m.any():
            outside = float(a[~m].sum() / total)
            inside = bool(m[r, c])
    return MapLocation(peak, centre, region_words(*peak), outside, inside)


# ---------------------------------------------------------------------------------------------- thresholds


def thresholds(report: VerificationReport) -> dict[tuple[str, str], Threshold]:
    """(class, quantity key) → its calibrated threshold, from the report's lines.

    E3 reports its deciding sub-measure per class (the value equals one of its ``numbers``): that key gets the
    threshold. E4's threshold is on ``E4.finding_drop``, E2's on ``E2.localisation_gain``."""
    out: dict[tuple[str, str], Threshold] = {}
    for ln in report.lines:
        for c in ln.per_class:
            if c.threshold is None or c.value is None:
                continue
            key: str | None = None
            if ln.key == "E3":
                key = next(
                    (
                        k
                        for k, v in c.numbers.items()
                        if k.startswith("E3.") and v is not None and math.isclose(v, c.value)
                    ),
                    None,
                )
            elif ln.key == "E4":
                key = "E4.finding_drop"
            elif ln.key == "E2":
                key = "E2.localisation_gain"
            if key is not None:
                out[(c.class_name, key)] = Threshold(float(c.threshold), bool(c.higher_is_better))
    return out


# ---------------------------------------------------------------------------------------------- sentence


def _pct(v: float) -> str:
    return f"{100 * v:.0f} %"


def _pts(v: float) -> str:
    n = f"{100 * v:.0f}"
    return f"{n} point" if n in ("1", "-1") else f"{n} points"


def _beyond(value: float, t: Threshold) -> bool:
    """True when ``value`` lies on the failing side of the threshold."""
    return value < t.value if t.higher_is_better else value > t.value


def _edge(t: Threshold, unit: str = "points") -> str:
    sign = "≥" if t.higher_is_better else "≤"
    number = f"{100 * t.value:.0f}"
    return f"healthy models {sign} {number}" + ("" if unit == "points" else " %")


def explain_image(
    im: ImageEvidence,
    *,
    location: MapLocation | None = None,
    limits: Mapping[tuple[str, str], Threshold] | None = None,
    anatomy: str = "the anatomy",
) -> Explanation:
    """One plain sentence of what was found on ``im`` and why, with the numbers behind it.

    ``location``: :func:`locate` of the image's map (with its anatomy mask, when known); ``limits``:
    :func:`thresholds` of the report; ``anatomy``: what the region of interest is called ("the lungs")."""
    limits = limits or {}
    numbers: dict[str, float | str] = {}
    if not im.assessable:
        reason = (im.not_assessable_reason or "excluded by the input-validity gate").rstrip(".")
        numbers["not assessable"] = reason
        return Explanation(
            f"Not assessed: {reason}; the model's prediction and heatmap on this image are not evidence.",
            numbers,
        )

    clauses: list[str] = []
    # what the model said
    if im.predicted is not None and im.probabilities:
        p = max(im.probabilities)
        numbers["predicted probability"] = p
        said = f"Predicted {im.predicted} ({_pct(p)})"
        if im.label is not None:
            said += ", as labelled" if im.label == im.predicted else f", but labelled {im.label}"
        clauses.append(said)
    cls = im.predicted
    values = im.values

    # where the attention lies
    outside_share = location.outside_share if location is not None else None
    if outside_share is None:
        outside_share = values.get("E3.outside_energy")
    if location is not None:
        numbers["attention peak (x, y as fractions of the image)"] = (
            f"{location.peak[0]:.2f}, {location.peak[1]:.2f}"
        )
        numbers["attention centre of mass (x, y)"] = f"{location.centre[0]:.2f}, {location.centre[1]:.2f}"
        if location.peak_inside is None:
            where = f"attention peaks {location.region} of the image"
        elif location.peak_inside:
            where = f"attention peaks inside {anatomy}, {location.region} of the image"
        else:
            where = f"attention peaks outside {anatomy}, {location.region} of the image"
        centre = region_words(*location.centre)
        if centre != location.region:  # spread attention: its weight sits elsewhere than its peak
            where += f", with its centre of mass {centre}"
        clauses.append(where)
    if outside_share is not None:
        numbers[f"share of attention outside {anatomy}"] = float(outside_share)
        clauses.append(f"{_pct(outside_share)} of its energy lies outside {anatomy}")

    # does the prediction rest on what lies outside the anatomy?
    drop = values.get("E3.outside_drop")
    if drop is not None and cls is not None:
        numbers[f"fall of the prediction with everything outside {anatomy} removed"] = drop
        area = f"everything outside {anatomy}"
        t = limits.get((cls, "E3.outside_drop"))
        if t is None:
            clauses.append(f"removing {area} changes the prediction by {_pts(drop)}")
        elif _beyond(drop, t):
            numbers["E3 threshold (outside removed)"] = t.value
            clauses.append(f"the prediction changes when {area} is removed ({_pts(drop)}; {_edge(t)})")
        else:
            numbers["E3 threshold (outside removed)"] = t.value
            clauses.append(f"removing {area} leaves the prediction in place ({_pts(drop)}; {_edge(t)})")
    survival = values.get("E3.inside_survival")
    if survival is not None and cls is not None:
        t = limits.get((cls, "E3.inside_survival"))
        if t is not None and _beyond(survival, t):
            numbers[f"probability kept with {anatomy} removed"] = survival
            numbers["E3 threshold (anatomy removed)"] = t.value
            clauses.append(
                f"the prediction survives the removal of {anatomy} ({_pct(survival)} kept; {_edge(t, '%')})"
            )

    # does it rest on the annotated finding?
    finding = values.get("E4.finding_drop")
    if finding is not None:
        numbers["fall of the labelled class with the finding removed"] = finding
        t = limits.get((im.label or cls or "", "E4.finding_drop"))
        if t is None:
            clauses.append(f"removing the annotated finding changes its probability by {_pts(finding)}")
        elif _beyond(finding, t):
            numbers["E4 threshold"] = t.value
            clauses.append(
                f"removing the annotated finding barely moves it ({_pts(finding)}; {_edge(t)}), so the "
                "prediction does not rest on the finding"
            )
        else:
            numbers["E4 threshold"] = t.value
            clauses.append(f"removing the annotated finding lowers it by {_pts(finding)} ({_edge(t)})")

    if not clauses:
        return Explanation("Assessed; no per-image number was measured on this image.", numbers)
    return Explanation("; ".join(clauses) + ".", numbers)
