"""Thresholds from healthy variation, checked for power against known-bad references (METHODS.md §3).

For every calibrated quantity (E3's three, E4's finding drop, E5's seven metrics, E6's faithfulness gain) and
every class, the healthy side is described by

* **several healthy models** (the usual case; the demo ships them): each model's class mean on the calibration
  images; the healthy edge is the worst of them and the spread their standard deviation; or
* **one trusted model**: a bootstrap over its calibration images (``n_boot`` resamples, seed 0) of the class
  mean; the edge is the 2.5th / 97.5th percentile on the bad side and the spread the bootstrap standard
  deviation.

The threshold is the healthy edge moved towards "worse" by a tolerance: max(3 × spread, 5 % of the quantity's
range, 0.4 × the gap to the nearest separating known-bad class mean) — room for healthy models the
calibration has not seen, never more than 40 % of the way to the bad side. **Power**: the same quantity
is measured on known-bad references (the cascading-randomised model at least; shortcut models where given).
For each, the AUROC of its per-image values against the healthy models' per-image values (bad = worse); a
quantity is *informative* for a class only when some known-bad reference both separates (AUROC ≥
``min_separation``, **default** 0.8) and has its class mean beyond the threshold. Otherwise it is
*uninformative* — reported with its numbers, never voting. A threshold outside the quantity's possible range
(a band that cannot fail) is uninformative by construction.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from verification.verdict.measure import QUANTITIES, Measurements
from verification.verdict.stats import auroc

CALIBRATION_VERSION = 1
CALIBRATED = tuple(k for k, q in QUANTITIES.items() if q.stated is None)
TOLERANCE_SPREADS = 3.0
TOLERANCE_RANGE = 0.05
TOLERANCE_GAP = 0.4


@dataclass(frozen=True)
class Edge:
    """One quantity for one class: ``threshold`` (None when it could not be set), ``informative``,
    ``auroc`` the best separation from a known-bad reference, ``healthy`` the healthy class means (or
    bootstrap
    percentiles), ``bad`` each known-bad reference's class mean and AUROC, ``note`` why uninformative."""

    key: str
    class_name: str
    threshold: float | None
    informative: bool
    auroc: float | None
    healthy_edge: float | None
    spread: float | None
    healthy: tuple[float, ...] = ()
    bad: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Calibration:
    """All edges, with the scheme that produced them and the models behind it."""

    scheme: str
    healthy: tuple[str, ...]
    bad: tuple[str, ...]
    edges: tuple[Edge, ...]
    n_images: int
    min_separation: float = 0.8
    created: str = ""
    version: int = CALIBRATION_VERSION

    def edge(self, key: str, class_name: str) -> Edge | None:
        for e in self.edges:
            if e.key == key and e.class_name == class_name:
                return e
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "scheme": self.scheme,
            "healthy": list(self.healthy),
            "bad": list(self.bad),
            "n_images": self.n_images,
            "min_separation": self.min_separation,
            "created": self.created,
            "edges": [
                {
                    "key": e.key,
                    "class_name": e.class_name,
                    "threshold": _f(e.threshold),
                    "informative": e.informative,
                    "auroc": _f(e.auroc),
                    "healthy_edge": _f(e.healthy_edge),
                    "spread": _f(e.spread),
                    "healthy": [_f(v) for v in e.healthy],
                    "bad": {k: [_f(v[0]), _f(v[1])] for k, v in e.bad.items()},
                    "note": e.note,
                }
                for e in self.edges
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Calibration:
        return cls(
            scheme=str(doc["scheme"]),
            healthy=tuple(doc["healthy"]),
            bad=tuple(doc["bad"]),
            n_images=int(doc["n_images"]),
            min_separation=float(doc.get("min_separation", 0.8)),
            created=str(doc.get("created", "")),
            version=int(doc.get("version", CALIBRATION_VERSION)),
            edges=tuple(
                Edge(
                    key=e["key"],
                    class_name=e["class_name"],
                    threshold=_o(e.get("threshold")),
                    informative=bool(e["informative"]),
                    auroc=_o(e.get("auroc")),
                    healthy_edge=_o(e.get("healthy_edge")),
                    spread=_o(e.get("spread")),
                    healthy=tuple(float("nan") if v is None else float(v) for v in e.get("healthy", [])),
                    bad={k: (_n(v[0]), _n(v[1])) for k, v in e.get("bad", {}).items()},
                    note=str(e.get("note", "")),
                )
                for e in doc["edges"]
            ),
        )


def _f(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _o(v: Any) -> float | None:
    return None if v is None else float(v)


def _n(v: Any) -> float:
    return float("nan") if v is None else float(v)


def class_values(m: Measurements, key: str, k: int) -> np.ndarray:
    """Finite per-image values of ``key`` on the assessable images counted for class ``k``."""
    v = m.values.get(key)
    if v is None:
        return np.zeros(0)
    sel = m.assessable & (m.group == k) & np.isfinite(v)
    return np.asarray(v[sel], dtype=np.float64)


def calibrate(
    healthy: Mapping[str, Measurements],
    bad: Mapping[str, Measurements],
    *,
    min_separation: float = 0.8,
    n_boot: int = 500,
    seed: int = 0,
) -> Calibration:
    """Edges for every calibrated quantity and class from healthy models' measurements (one model: bootstrap
    over its images) and known-bad references' measurements, all on the same labelled calibration images."""
    if not healthy:
        raise ValueError("calibration needs at least one healthy (trusted) model")
    first = next(iter(healthy.values()))
    classes = first.class_names
    rng = np.random.default_rng(seed)
    edges = []
    for key in CALIBRATED:
        q = QUANTITIES[key]
        if not any(key in m.values for m in healthy.values()):
            continue
        lo, hi = q.range
        worse = -1.0 if q.higher_is_better else 1.0
        for k, name in enumerate(classes):
            per_model = [class_values(m, key, k) for m in healthy.values()]
            per_model = [v for v in per_model if v.size >= 2]
            pooled = np.concatenate(per_model) if per_model else np.zeros(0)
            if not per_model:
                edges.append(Edge(key, name, None, False, None, None, None, note="no healthy measurements"))
                continue
            if len(per_model) >= 2:
                means = np.array([v.mean() for v in per_model])
                edge = float(means.max() if worse > 0 else means.min())
                spread = float(means.std(ddof=1))
                summary = tuple(float(v) for v in means)
            else:
                v = per_model[0]
                boots = rng.choice(v, size=(n_boot, v.size), replace=True).mean(1)
                edge = float(np.percentile(boots, 97.5 if worse > 0 else 2.5))
                spread = float(boots.std(ddof=1))
                summary = (
                    float(np.percentile(boots, 2.5)),
                    float(v.mean()),
                    float(np.percentile(boots, 97.5)),
                )
            tol = max(TOLERANCE_SPREADS * spread, TOLERANCE_RANGE * (hi - lo))
            bad_numbers: dict[str, tuple[float, float]] = {}
            for bname, bm in bad.items():
                bv = class_values(bm, key, k)
                if bv.size:
                    bad_numbers[bname] = (float(bv.mean()), auroc(bv, pooled, q.higher_is_better))
            gaps = [
                (mean - edge) * worse
                for mean, a in bad_numbers.values()
                if np.isfinite(a) and a >= min_separation and (mean - edge) * worse > tol
            ]
            if gaps:
                tol = max(tol, TOLERANCE_GAP * min(gaps))
            threshold = edge + worse * tol
            caught = [(a, bool((mean - threshold) * worse > 0)) for mean, a in bad_numbers.values()]
            best = max((a for a, _ in caught if np.isfinite(a)), default=float("nan"))
            informative = any(np.isfinite(a) and a >= min_separation and b for a, b in caught)
            note = ""
            if not lo <= threshold <= hi:
                informative = False
                note = (
                    f"threshold {threshold:.3f} lies outside the possible range [{lo:g}, {hi:g}]: "
                    "it cannot fail"
                )
            elif not caught:
                note = "no known-bad reference measured for this class"
            elif not informative:
                note = (
                    f"no known-bad reference separates from healthy (best AUROC {best:.2f}, needs ≥ "
                    f"{min_separation:.2f} and a class mean beyond the threshold)"
                )
            edges.append(
                Edge(
                    key,
                    name,
                    float(threshold),
                    informative,
                    best if np.isfinite(best) else None,
                    edge,
                    spread,
                    summary,
                    bad_numbers,
                    note,
                )
            )
    scheme = (
        f"healthy variation of {len(healthy)} models ({', '.join(healthy)}): worst class mean, tolerance "
        f"max({TOLERANCE_SPREADS:g} × between-model SD, {100 * TOLERANCE_RANGE:g} % of the range, "
        f"{TOLERANCE_GAP:g} × gap to the nearest separating known-bad mean)"
        if len(healthy) >= 2
        else f"one trusted model ({next(iter(healthy))}), bootstrap over its images ({n_boot} resamples): "
        f"97.5th percentile of the class mean, tolerance max({TOLERANCE_SPREADS:g} × bootstrap SD, "
        f"{100 * TOLERANCE_RANGE:g} % of the range, {TOLERANCE_GAP:g} × gap to the nearest separating "
        "known-bad mean)"
    )
    return Calibration(
        scheme=scheme,
        healthy=tuple(healthy),
        bad=tuple(bad),
        edges=tuple(edges),
        n_images=first.n,
        min_separation=min_separation,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
