"""Evaluating the evidence lines E0–E6 on a run's measurements (METHODS.md §3).

Every line judges, per class, an interval against a threshold (:func:`verification.verdict.stats.judge`): pass
when the whole 95 % interval lies on the healthy side, fail when it lies wholly on the other side,
inconclusive
otherwise. Only assessable images (E0) count; a class's evidence is its labelled images (or, without labels,
the images predicted as it).

* E1: sensitivity and specificity per class with Wilson intervals; Youden's J = sens + spec − 1 with interval
  [sens_lo + spec_lo − 1, sens_hi + spec_hi − 1]; threshold ``config.e1_margin`` above chance (J = 0).
* E2: per image, energy inside the annotation minus the better of two trivial baselines (uniform map: the
  annotation's area share; the class's leave-one-out mean map of this run); paired, Student-t interval of the
  mean difference; threshold 0 (the maps must localise better than the baseline).
* E3, E4, E5, E6: class mean of the per-image quantity with a Student-t interval against the calibrated edge
  (:mod:`verification.verdict.calibration`); E3 votes with its two counterfactuals (behaviour: either one
  failing clearly fails, one passing with none failing passes); its attention energy outside the anatomy is
  reported beside them but does not vote (where attention lies is supporting evidence, not proof of
  reliance); E5 uses, per class, the metric that separated best in calibration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from verification.verdict.calibration import Calibration, Edge, class_values
from verification.verdict.measure import QUANTITIES, Measurements
from verification.verdict.records import LINE_NAMES, ClassLine, LineResult, Status, VerdictConfig
from verification.verdict.stats import judge, mean_interval, wilson

T_INTERVAL = "Student t 95 % interval of the class mean"
E3_KEYS = ("E3.outside_drop", "E3.inside_survival", "E3.texture_drop")
E3_REPORTED = ("E3.outside_energy",)


def overall_status(statuses: Sequence[Status]) -> Status:
    """A line's status from its classes': fail, else inconclusive, else pass, else uninformative (when any
    class is), else not assessable."""
    order: tuple[Status, ...] = ("fail", "inconclusive", "pass")
    for s in order:
        if s in statuses:
            return s
    if statuses and all(s == "uninformative" for s in statuses):
        return "uninformative"
    if "uninformative" in statuses:
        return "uninformative"
    return "not_assessable"


def _f(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


# ------------------------------------------------------------------------------------------------------ E0
def too_many_not_assessable(n: int, not_assessable: int, config: VerdictConfig) -> bool:
    """E0's limit: more than ``config.max_not_assessable`` of ``n`` (> 0) images removed by the input gate."""
    return n > 0 and not_assessable / n > config.max_not_assessable


def line_e0(m: Measurements, config: VerdictConfig) -> LineResult:
    per = []
    for k, name in enumerate(m.class_names):
        sel = m.group == k
        n, ok = int(sel.sum()), int((sel & m.assessable).sum())
        status: Status = "not_assessable"
        if n:
            status = "not_assessable" if too_many_not_assessable(n, n - ok, config) else "pass"
        per.append(
            ClassLine(
                name,
                status,
                value=_f(ok / n) if n else None,
                n=ok,
                numbers={"images": float(n)},
                reason=f"{ok} of {n} images assessable" if n else "no images of this class",
            )
        )
    outside = m.group < 0
    n_out = int(outside.sum())
    bad = int((~m.assessable).sum())
    numbers: dict[str, float | None] = {"images": float(m.n), "not_assessable": float(bad)}
    for key, v in m.gate_numbers.items():
        numbers[f"{key} (median)"] = _f(float(np.nanmedian(v))) if np.isfinite(v).any() else None
    sentence = f"{m.n - bad} of {m.n} images assessable"
    if bad:
        sentence += (
            f"; {bad} removed by the input gate (garbage class, early feature shift or image statistics)"
        )
    if n_out:
        sentence += f"; {n_out} predicted as a class outside the bundle"
    status = "pass" if m.n and not too_many_not_assessable(m.n, bad, config) else "not_assessable"
    return LineResult(
        "E0",
        LINE_NAMES["E0"],
        status,
        False,
        tuple(per),
        calibration="gate edges: Tukey far-out fence (Q3 + 3 IQR) of the reference images' "
        "leave-one-out scores",
        numbers=numbers,
        sentence=sentence,
    )


# ------------------------------------------------------------------------------------------------------ E1
def line_e1(m: Measurements, config: VerdictConfig, multilabel: bool = False) -> LineResult:
    labelled = m.assessable & (m.labels >= 0)
    if not labelled.any():
        none = tuple(ClassLine(c, "not_assessable", reason="no labels") for c in m.class_names)
        return LineResult(
            "E1",
            LINE_NAMES["E1"],
            "not_assessable",
            True,
            none,
            calibration="stated floor",
            sentence="no labelled images: task performance unknown",
        )
    lab = m.labels[labelled]
    per: list[ClassLine] = []
    for k, name in enumerate(m.class_names):
        if multilabel:
            mk = m.model_classes.index(name) if name in m.model_classes else -1
            said = (m.probs[labelled, mk] > 0.5) if mk >= 0 else np.zeros(len(lab), bool)
        else:
            said = m.predicted[labelled] == k
        pos, neg = lab == k, lab != k
        tp, tn = int((said & pos).sum()), int((~said & neg).sum())
        se, se_lo, se_hi = wilson(tp, int(pos.sum()), config.confidence)
        sp, sp_lo, sp_hi = wilson(tn, int(neg.sum()), config.confidence)
        numbers = {
            "sensitivity": _f(se),
            "sensitivity_low": se_lo,
            "sensitivity_high": se_hi,
            "specificity": _f(sp),
            "specificity_low": sp_lo,
            "specificity_high": sp_hi,
            "positives": float(pos.sum()),
            "negatives": float(neg.sum()),
        }
        if not pos.any() or not neg.any():
            per.append(
                ClassLine(
                    name,
                    "not_assessable",
                    n=int(pos.sum()),
                    numbers=numbers,
                    reason="needs labelled images of this class and of the others",
                )
            )
            continue
        j, j_lo, j_hi = se + sp - 1, se_lo + sp_lo - 1, se_hi + sp_hi - 1
        status = judge(j_lo, j_hi, config.e1_margin, True)
        words = {"pass": "clears", "fail": "does not reach", "inconclusive": "is not shown to clear"}[status]
        per.append(
            ClassLine(
                name,
                status,
                value=j,
                low=j_lo,
                high=j_hi,
                threshold=config.e1_margin,
                n=int(pos.sum()),
                interval="Wilson 95 % intervals of sensitivity and specificity, summed",
                numbers=numbers,
                reason=f"sensitivity {se:.2f} [{se_lo:.2f}, {se_hi:.2f}], specificity {sp:.2f} "
                f"[{sp_lo:.2f}, {sp_hi:.2f}]: Youden J {j:.2f} {words} {config.e1_margin:.2f} above chance",
            )
        )
    acc = float((m.predicted[labelled] == lab).mean())
    status = overall_status([c.status for c in per])
    return LineResult(
        "E1",
        LINE_NAMES["E1"],
        status,
        True,
        tuple(per),
        calibration=f"stated: Youden J must clear chance (0) by {config.e1_margin:g} (Wilson 95 %)",
        numbers={"accuracy": acc, "labelled": float(labelled.sum())},
        sentence=f"accuracy {100 * acc:.1f} % on {int(labelled.sum())} labelled images; "
        + "; ".join(f"{c.class_name}: {c.status}" for c in per),
    )


# ------------------------------------------------------------------------------------------------------ E2
def e2_gain(m: Measurements) -> np.ndarray:
    """Per image: energy inside the annotation minus the better trivial baseline (NaN without annotation)."""
    inside = m.values.get("E2.energy_inside", np.full(m.n, np.nan))
    gain = np.full(m.n, np.nan)
    area = m.lesions.reshape(m.n, -1).mean(1) if m.n else np.zeros(0)
    for k in range(len(m.class_names)):
        sel = np.nonzero((m.group == k) & m.assessable)[0]
        if sel.size < 2:
            continue
        maps = m.maps[sel].astype(np.float64)
        maps = maps / np.maximum(maps.reshape(len(sel), -1).sum(1), 1e-12)[:, None, None]
        total = maps.sum(0)
        for j, i in enumerate(sel):
            if not m.has_finding[i] or not np.isfinite(inside[i]):
                continue
            loo = (total - maps[j]) / (len(sel) - 1)
            base_mean = float((loo * m.lesions[i]).sum() / max(loo.sum(), 1e-12))
            gain[i] = inside[i] - max(float(area[i]), base_mean)
    return gain


def line_e2(m: Measurements, config: VerdictConfig) -> LineResult:
    gain = e2_gain(m)
    per = []
    for k, name in enumerate(m.class_names):
        sel = (m.group == k) & m.assessable & np.isfinite(gain)
        if sel.sum() < 2:
            per.append(ClassLine(name, "not_assessable", n=int(sel.sum()), reason="no annotated findings"))
            continue
        v, lo, hi = mean_interval(gain[sel], config.confidence)
        status = judge(lo, hi, 0.0, True)
        per.append(
            ClassLine(
                name,
                status,
                value=v,
                low=lo,
                high=hi,
                threshold=0.0,
                n=int(sel.sum()),
                interval="paired Student t 95 % interval of (map − best baseline)",
                reason=f"attention inside the finding beats the best trivial map by {v:+.3f} "
                f"[{lo:+.3f}, {hi:+.3f}]",
            )
        )
    status = overall_status([c.status for c in per])
    decisive = any(c.status != "not_assessable" for c in per)
    return LineResult(
        "E2",
        LINE_NAMES["E2"],
        status,
        decisive,
        tuple(per),
        calibration="stated: better than the uniform map and the run's mean map of the class",
        sentence="; ".join(f"{c.class_name}: {c.status}" for c in per),
    )


# ------------------------------------------------------------------------------------------ calibrated lines
def _quantity_class(
    m: Measurements, key: str, k: int, cal: Calibration | None, config: VerdictConfig
) -> ClassLine:
    name = m.class_names[k]
    q = QUANTITIES[key]
    v = class_values(m, key, k)
    if v.size < 2:
        return ClassLine(
            name,
            "not_assessable",
            n=int(v.size),
            higher_is_better=q.higher_is_better,
            reason=f"{v.size} measured images",
        )
    mean, lo, hi = mean_interval(v, config.confidence)
    edge = cal.edge(key, name) if cal is not None else None
    base = dict(
        value=mean, low=lo, high=hi, n=int(v.size), higher_is_better=q.higher_is_better, interval=T_INTERVAL
    )
    if edge is None or edge.threshold is None:
        why = "the bundle has no calibration" if cal is None else "no calibrated threshold for this class"
        return ClassLine(name, "not_assessable", **base, reason=f"mean {mean:.3f}; {why}")  # type: ignore[arg-type]
    numbers = {"auroc": edge.auroc, "healthy_edge": edge.healthy_edge, **_healthy_band(edge)}
    if not edge.informative:
        return ClassLine(
            name,
            "uninformative",
            threshold=edge.threshold,
            numbers=numbers,
            **base,  # type: ignore[arg-type]
            reason=f"mean {mean:.3f} [{lo:.3f}, {hi:.3f}]; {edge.note}",
        )
    status = judge(lo, hi, edge.threshold, q.higher_is_better)
    side = "≥" if q.higher_is_better else "≤"
    return ClassLine(
        name,
        status,
        threshold=edge.threshold,
        numbers=numbers,
        **base,  # type: ignore[arg-type]
        reason=f"{q.description}: {mean:.3f} [{lo:.3f}, {hi:.3f}], healthy {side} "
        f"{edge.threshold:.3f} (separation AUROC {edge.auroc or float('nan'):.2f})",
    )


def _healthy_band(edge: Edge) -> dict[str, float | None]:
    """The healthy models' class means as a band (lowest, highest) for the report's band charts."""
    vals = [float(v) for v in edge.healthy if math.isfinite(float(v))]
    return {"healthy_low": min(vals), "healthy_high": max(vals)} if vals else {}


def _merge(name: str, parts: Sequence[ClassLine]) -> ClassLine:
    """E3's counterfactuals are detectors of one thing (reliance on what should not decide): the class fails
    when one fails clearly, passes when at least one passes and none fails, and is inconclusive when the
    informative ones are all inconclusive. A sub-measure that could not be assessed (a bundle calibrated
    before it existed, no region) does not count when the others could be."""
    measured = [p for p in parts if p.status != "not_assessable"]
    statuses = [p.status for p in (measured or parts)]
    if any(s == "fail" for s in statuses):
        status: Status = "fail"
    elif any(s == "pass" for s in statuses):
        status = "pass"
    elif any(s == "inconclusive" for s in statuses):
        status = "inconclusive"
    elif statuses and all(s == "uninformative" for s in statuses):
        status = "uninformative"
    else:
        status = "not_assessable"
    lead = next((p for p in parts if p.status == status), parts[0])
    healthy = {k: v for k, v in lead.numbers.items() if k.startswith("healthy")}  # the lead's band
    numbers = {**healthy, **{f"{k}": p.value for k, p in zip(E3_KEYS, parts)}}
    return ClassLine(
        name,
        status,
        value=lead.value,
        low=lead.low,
        high=lead.high,
        threshold=lead.threshold,
        higher_is_better=lead.higher_is_better,
        n=max(p.n for p in parts),
        interval=lead.interval,
        numbers=numbers,
        reason="; ".join(p.reason for p in parts if p.reason),
    )


def _calibrated_line(key: str, per: Sequence[ClassLine], cal: Calibration | None, always: bool) -> LineResult:
    status = overall_status([c.status for c in per])
    informative = any(c.status in ("pass", "fail", "inconclusive") for c in per)
    sep = [c.numbers.get("auroc") for c in per if c.numbers.get("auroc") is not None]
    return LineResult(
        key,
        LINE_NAMES[key],
        status,
        always or informative,
        tuple(per),
        calibration=cal.scheme if cal is not None else "none: the bundle carries no calibration",
        separation=float(min(s for s in sep if s is not None)) if sep else None,
        sentence="; ".join(f"{c.class_name}: {c.status}" for c in per),
    )


def line_e3(m: Measurements, cal: Calibration | None, config: VerdictConfig) -> LineResult:
    per = []
    for k, name in enumerate(m.class_names):
        merged = _merge(name, [_quantity_class(m, key, k, cal, config) for key in E3_KEYS])
        extra = {
            key: _f(float(v.mean())) if (v := class_values(m, key, k)).size else None for key in E3_REPORTED
        }
        per.append(ClassLine(**{**merged.__dict__, "numbers": {**merged.numbers, **extra}}))
    ln = _calibrated_line("E3", per, cal, True)
    return LineResult(
        **{**ln.__dict__, "numbers": {"region": None}, "sentence": f"region: {m.roi_method}; " + ln.sentence}
    )


def line_e4(m: Measurements, cal: Calibration | None, config: VerdictConfig) -> LineResult:
    per = [_quantity_class(m, "E4.finding_drop", k, cal, config) for k in range(len(m.class_names))]
    per = [
        c if c.n >= 2 else ClassLine(c.class_name, "not_assessable", n=c.n, reason="no annotated findings")
        for c in per
    ]
    return _calibrated_line("E4", per, cal, True)


def line_e5(
    m: Measurements, cal: Calibration | None, config: VerdictConfig, metrics: Sequence[str]
) -> LineResult:
    per = []
    for k, name in enumerate(m.class_names):
        best: tuple[float, str] | None = None
        if cal is not None:
            for metric in metrics:
                e = cal.edge(f"E5.{metric}", name)
                if (
                    e is not None
                    and e.informative
                    and e.auroc is not None
                    and (best is None or e.auroc > best[0])
                ):
                    best = (e.auroc, metric)
        metric = best[1] if best else metrics[0]
        c = _quantity_class(m, f"E5.{metric}", k, cal, config)
        means = {
            mm: _f(float(np.mean(class_values(m, f"E5.{mm}", k))))
            if class_values(m, f"E5.{mm}", k).size
            else None
            for mm in metrics
        }
        per.append(
            ClassLine(**{**c.__dict__, "numbers": {**c.numbers, **means}, "reason": f"{metric}: {c.reason}"})
        )
    return _calibrated_line("E5", per, cal, False)


def line_e6(m: Measurements, cal: Calibration | None, config: VerdictConfig) -> LineResult:
    if "E6.faithfulness_gain" not in m.values:
        none = tuple(ClassLine(c, "not_assessable", reason="faithfulness not run") for c in m.class_names)
        return LineResult("E6", LINE_NAMES["E6"], "not_assessable", False, none, sentence="not run")
    per = [_quantity_class(m, "E6.faithfulness_gain", k, cal, config) for k in range(len(m.class_names))]
    return _calibrated_line("E6", per, cal, False)


def evaluate_lines(
    m: Measurements,
    cal: Calibration | None,
    config: VerdictConfig,
    metrics: Sequence[str],
    multilabel: bool = False,
) -> tuple[LineResult, ...]:
    """E0 … E6 on one run's measurements."""
    return (
        line_e0(m, config),
        line_e1(m, config, multilabel),
        line_e2(m, config),
        line_e3(m, cal, config),
        line_e4(m, cal, config),
        line_e5(m, cal, config, metrics),
        line_e6(m, cal, config),
    )
