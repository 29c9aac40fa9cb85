"""The combiner (METHODS.md §3): evidence lines → a verdict per class and per model, naming the deciding line.

Per class, in this order:

1. **UNSUITABLE** when a voting decisive line fails for the class (E1, E3, E4, E2 with annotations; E5 and E6
   only where calibration found them informative). The first failing line in the order E1, E3, E4, E2, E5, E6
   decides. A failure needs its whole 95 % interval beyond the threshold on the *assessable* images, however
   few they are, so it takes precedence over every CANNOT VERIFY below, E0's included: the images the gate
   removed count neither way, and a model that clearly fails on valid inputs is unsuitable whatever the
   removed ones would have shown.
2. **CANNOT VERIFY (E0)** when too many images are not assessable (METHODS §3): more than
   ``VerdictConfig.max_not_assessable`` of the run's images, or of the class's own images, were removed by
   the input gate, so what is left is no longer the dataset the question is about. The reason names the
   count and the limit.
3. **CANNOT VERIFY** when the run has neither labels nor annotations; when fewer than ``min_images`` of the
   class's images are assessable; when a required line is inconclusive or not assessable (E1 with labels; E3
   always; E2 and E4 where the class has annotated findings) — an uninformative line does not block.
4. **CANNOT VERIFY** when any other voting decisive line is inconclusive for the class (E5/E6 where
   calibration found them informative): SUITABLE needs every assessable decisive line to pass. An
   uninformative or not assessable line does not vote.
5. At least one line that tests *why* the model decides (E2, E3, E4, or an informative E5/E6) must pass, else
   CANNOT VERIFY: performance alone never makes a model suitable. Only a **no-finding class**
   (``VerdictConfig.no_finding_classes``, e.g. "normal": the absence of a finding, which has nothing to
   annotate or remove) with no annotated finding and no informative reliance line of its own may borrow this
   evidence from the model: some other class must have passed a reliance line. Any other class without
   reliance evidence of its own is CANNOT VERIFY, saying what is missing.
6. Without any finding annotation in the run (``VerdictConfig.require_findings``, default on): CANNOT VERIFY,
   since no labels-only line separates a cue inside the anatomy from the finding (the demo's texture shortcut
   overlaps the healthy models on every labels-only line).
7. Otherwise **SUITABLE**; the lines that passed are named.

The model's verdict is its worst class's (UNSUITABLE > CANNOT VERIFY > SUITABLE). No images measured → CANNOT
VERIFY. Not-assessable images never count as passing evidence: they are excluded before any line is evaluated.
The multi-label path (:mod:`verification.verdict.multilabel`) applies the same per-class rule to each label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from verification.verdict.lines import too_many_not_assessable
from verification.verdict.measure import Measurements
from verification.verdict.records import LINE_NAMES, SEVERITY, ClassVerdict, LineResult, VerdictConfig

ORDER = ("E1", "E3", "E4", "E2", "E5", "E6")
RELIANCE = ("E2", "E3", "E4", "E5", "E6")


def combine(
    m: Measurements, lines: Sequence[LineResult], config: VerdictConfig
) -> tuple[tuple[ClassVerdict, ...], str, str | None, str, tuple[str, ...]]:
    """(per-class verdicts, model verdict, deciding line, reason, what is missing)."""
    by_key = {ln.key: ln for ln in lines}
    has_labels = bool((m.labels >= 0).any())
    has_annotations = bool(m.has_finding.any())
    classes = []
    relied = {name: _reliance_passed(by_key, name) for name in m.class_names}
    for k, name in enumerate(m.class_names):
        n_img = int((m.group == k).sum())
        n_ok = int(((m.group == k) & m.assessable).sum())
        others = any(v for c, v in relied.items() if c != name)
        classes.append(
            class_verdict(name, n_img, n_ok, by_key, has_labels, has_annotations, m, k, config, others)
        )
    worst = max(classes, key=lambda c: SEVERITY[c.verdict]) if classes else None
    missing = tuple(dict.fromkeys(x for c in classes for x in c.missing))
    if worst is None or not m.n or not m.assessable.any():
        why = "no image could be assessed" if m.n else "no images were measured"
        return (
            tuple(classes),
            "cannot_verify",
            "E0",
            f"{why}: a verdict needs measurements",
            missing or (why,),
        )
    return (tuple(classes), *model_verdict(classes, "class"), missing)


def model_verdict(classes: Sequence[ClassVerdict], unit: str) -> tuple[str, str | None, str]:
    """(verdict, deciding line, reason) of a model from its classes' (``unit``: "class" or "label") verdicts,
    at least one: the worst class's, SUITABLE only when every class passed its decisive lines."""
    worst = max(classes, key=lambda c: SEVERITY[c.verdict])
    if worst.verdict == "suitable":
        return "suitable", worst.deciding_line, f"every {unit} passed its decisive lines"
    return worst.verdict, worst.deciding_line, f"{worst.class_name}: {worst.reason}"


def class_verdict(
    name: str,
    n_img: int,
    n_ok: int,
    by_key: dict[str, LineResult],
    has_labels: bool,
    has_annotations: bool,
    m: Measurements,
    k: int,
    config: VerdictConfig,
    others_relied: bool = False,
) -> ClassVerdict:
    decisive = {  # the class's result on each voting line, in ORDER
        key: c
        for key in ORDER
        if (ln := by_key.get(key)) is not None and ln.decisive and (c := ln.for_class(name)) is not None
    }
    for key, c in decisive.items():
        if c.status == "fail":
            return ClassVerdict(
                name, "unsuitable", key, f"{key} {LINE_NAMES[key]} failed — {c.reason}", n_img, n_ok
            )
    truth = "labels (class subfolders or a CSV) or finding annotations (lesion masks or boxes)"
    no_truth = not has_labels and not has_annotations
    gated = _too_many_gated(name, n_img, n_ok, m, config)
    if gated is not None:  # E0 decides; what else is missing is said too
        reason, what = gated
        return ClassVerdict(
            name, "cannot_verify", "E0", reason, n_img, n_ok, (what, truth) if no_truth else (what,)
        )
    if no_truth:
        return ClassVerdict(name, "cannot_verify", None, f"no {truth}", n_img, n_ok, (truth,))
    if n_ok < config.min_images:
        what = f"at least {config.min_images} assessable images of '{name}' ({n_ok} of {n_img} assessable)"
        return ClassVerdict(
            name, "cannot_verify", "E0", f"too few assessable images: {what}", n_img, n_ok, (what,)
        )
    class_has_findings = bool((m.has_finding & (m.group == k) & m.assessable).any())
    required = (["E1"] if has_labels else []) + ["E3"] + (["E4", "E2"] if class_has_findings else [])
    for key in required:
        ln = by_key.get(key)
        c = ln.for_class(name) if ln is not None else None
        status = c.status if c is not None else "not_assessable"
        if status in ("pass", "uninformative"):
            continue
        reason = c.reason if c is not None else "not measured"
        what = f"{key} {LINE_NAMES[key]} {status.replace('_', ' ')} for '{name}' ({reason})"
        return ClassVerdict(name, "cannot_verify", key, what, n_img, n_ok, (what,))
    for key, c in decisive.items():  # no other voting line may be inconclusive (E5/E6 when informative)
        if c.status == "inconclusive":
            what = f"{key} {LINE_NAMES[key]} inconclusive for '{name}' ({c.reason})"
            return ClassVerdict(name, "cannot_verify", key, what, n_img, n_ok, (what,))
    passed = [key for key, c in decisive.items() if c.status == "pass"]
    own_reliance = class_has_findings or any(
        c.status in ("pass", "fail", "inconclusive") for key, c in decisive.items() if key in RELIANCE
    )
    borrowed = ""
    if not any(key in RELIANCE for key in passed):
        no_finding = config.is_no_finding(name)
        if no_finding and not own_reliance and others_relied:  # borrows: another class passed a reliance line
            borrowed = "; a no-finding class: the model's reliance evidence comes from the other classes"
        else:
            what = (
                "a passing line showing the model decides from the findings (E2, E3, E4, informative E5/E6)"
                if own_reliance or no_finding
                else f"reliance evidence of '{name}' itself: its finding annotations (E2, E4) or an "
                "informative E3/E5/E6 for it; only a no-finding class (VerdictConfig.no_finding_classes: "
                f"{', '.join(config.no_finding_classes) or 'none'}) may rest on the other classes' evidence"
            )
            why = f"no evidence of why the model decides: {what}"
            return ClassVerdict(name, "cannot_verify", "E3", why, n_img, n_ok, (what,))
    if config.require_findings and not has_annotations:
        what = (
            "finding annotations (lesion masks or boxes): without them no line can tell the finding from "
            "a cue inside the anatomy (E2, E4)"
        )
        return ClassVerdict(
            name, "cannot_verify", "E4", f"passed {', '.join(passed)}, but no {what}", n_img, n_ok, (what,)
        )
    reason = f"passed {', '.join(passed)}{borrowed}"
    return ClassVerdict(name, "suitable", "+".join(passed), reason, n_img, n_ok)


def _too_many_gated(
    name: str, n_img: int, n_ok: int, m: Measurements, config: VerdictConfig
) -> tuple[str, str] | None:
    """(reason, what is missing) when E0's limit is exceeded over the run or over the class's own images."""
    bad = int((~m.assessable).sum())
    if too_many_not_assessable(m.n, bad, config):
        n, gone, scope = m.n, bad, f"the run's {m.n} images"
    elif too_many_not_assessable(n_img, n_img - n_ok, config):
        n, gone, scope = n_img, n_img - n_ok, f"the {n_img} images of '{name}'"
    else:
        return None
    limit = f"{100 * config.max_not_assessable:g} %"
    reason = (
        f"too many images not assessable: {gone} of {scope} ({100 * gone / n:.1f} %) were removed by the "
        f"input gate, more than the {limit} allowed (VerdictConfig.max_not_assessable)"
    )
    what = f"images the input gate accepts: at most {limit} not assessable ({gone} of {n} were)"
    return reason, what


def _reliance_passed(by_key: dict[str, LineResult], name: str) -> bool:
    for key in RELIANCE:
        ln = by_key.get(key)
        c = ln.for_class(name) if ln is not None and ln.decisive else None
        if c is not None and c.status == "pass":
            return True
    return False


def accuracy(m: Measurements, confidence: float = 0.95) -> tuple[float | None, tuple[float, float] | None]:
    from verification.verdict.stats import wilson

    sel = m.assessable & (m.labels >= 0)
    if not sel.any():
        return None, None
    k = int((m.predicted[sel] == m.labels[sel]).sum())
    p, lo, hi = wilson(k, int(sel.sum()), confidence)
    return float(p), (lo, hi)


def image_why(m: Measurements, i: int) -> str:
    """One plain sentence about image ``i``."""
    if not m.assessable[i]:
        return f"not assessable: {m.gate_reasons[i]}"
    cls = m.class_names[m.predicted[i]] if m.predicted[i] >= 0 else "a class outside the bundle"
    parts = [f"predicted {cls} ({100 * float(m.probs[i].max()):.0f} %)"]
    if m.labels[i] >= 0:
        parts.append("correct" if m.labels[i] == m.predicted[i] else f"label {m.class_names[m.labels[i]]}")
    v = m.values
    if np.isfinite(v.get("E3.outside_energy", np.array([np.nan] * m.n))[i]):
        parts.append(f"{100 * v['E3.outside_energy'][i]:.0f} % of attention outside the anatomy")
    if np.isfinite(v.get("E3.inside_survival", np.array([np.nan] * m.n))[i]):
        parts.append(f"{100 * v['E3.inside_survival'][i]:.0f} % kept with the anatomy removed")
    if np.isfinite(v.get("E4.finding_drop", np.array([np.nan] * m.n))[i]):
        parts.append(f"removing the finding lowered it by {100 * v['E4.finding_drop'][i]:.0f} points")
    return "; ".join(parts)
