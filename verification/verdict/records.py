"""The verdict's records (METHODS.md §3): frozen, versioned, one JSON document.

A :class:`VerificationReport` is what :func:`verification.verify` returns, what
``python -m verification verify --json`` writes, what the dashboard offers for download and what
``python -m verification report`` renders: ``to_document()`` / ``from_document()`` are its only JSON form
(``SCHEMA`` / ``SCHEMA_VERSION``).

Vocabulary:

* a **line** (E0 … E6) is one independent line of evidence; per class it reports a status, the number it
  measured with its 95 % interval, the threshold it was judged against and how that threshold was calibrated;
* **status** of a line (per class and overall): ``pass`` (the interval lies on the healthy side of the
  threshold), ``fail`` (it lies clearly on the other side), ``inconclusive`` (the interval straddles the
  threshold: not enough evidence), ``not_assessable`` (nothing to measure: no labels, no annotations, no
  calibration, too few assessable images) or ``uninformative`` (calibration showed the line cannot separate
  healthy from known-bad models, so it does not vote);
* **verdict** (per class and per model): ``suitable``, ``unsuitable`` or ``cannot_verify``; the model's
  verdict is its worst class's; every verdict names the line that decided it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

import numpy as np

from verification.errors import BundleError

SCHEMA = "verification.verdict.VerificationReport"
SCHEMA_VERSION = 1

Status = Literal["pass", "fail", "inconclusive", "not_assessable", "uninformative"]
Verdict = Literal["suitable", "unsuitable", "cannot_verify"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "inconclusive", "not_assessable", "uninformative")
VERDICTS: tuple[Verdict, ...] = ("suitable", "unsuitable", "cannot_verify")
VERDICT_LABELS: dict[str, str] = {
    "suitable": "SUITABLE",
    "unsuitable": "UNSUITABLE",
    "cannot_verify": "CANNOT VERIFY",
}
STATUS_LABELS: dict[str, str] = {
    "pass": "passed",
    "fail": "failed",
    "inconclusive": "inconclusive",
    "not_assessable": "not assessable",
    "uninformative": "not informative (does not vote)",
}
SEVERITY: dict[str, int] = {"suitable": 0, "cannot_verify": 1, "unsuitable": 2}

MULTILABEL_NOTE = (
    "multi-label model: one verdict per label, each from that label's own yes/no task (positives: the images "
    "annotated with it; probabilities: its sigmoid); the model's verdict is its worst label's"
)

LINE_NAMES: dict[str, str] = {
    "E0": "input validity",
    "E1": "task performance",
    "E2": "localisation of the annotated finding",
    "E3": "reliance on evidence outside the anatomy",
    "E4": "finding counterfactual",
    "E5": "agreement with reference maps",
    "E6": "faithfulness",
}
"""The evidence lines of METHODS.md §3, in the order the combiner reads them."""

NO_FINDING_CLASSES: tuple[str, ...] = (
    "normal",
    "no finding",
    "no_finding",
    "no-finding",
    "nofinding",
    "healthy",
    "negative",
)
"""The default :attr:`VerdictConfig.no_finding_classes`: common names of the class that is no finding."""


@dataclass(frozen=True)
class VerdictConfig:
    """The verdict's parameters (METHODS.md §3 defaults).

    ``min_images``: assessable images a class needs before it can be judged suitable; ``min_separation``:
    AUROC (healthy vs known-bad) below which a calibrated quantity is uninformative; ``e1_margin``: a class's
    Youden index J = sensitivity + specificity − 1 must clear chance (0) by this much (its 95 % Wilson
    interval decides); ``confidence``: level of every interval; ``max_not_assessable``: share of images the E0
    gate may remove before the whole run cannot be verified; ``faithfulness``: run E6
    (deletion/insertion, about 4 × steps extra forwards per image); ``e6_steps``: deletion/insertion steps;
    ``counterfactuals``: run E3's and E4's counterfactual forwards (without them E3/E4 are not assessable).
    ``require_findings``: SUITABLE needs finding annotations in the run (E2/E4 assessable). Without them no
    line tells the finding from a cue *inside* the anatomy (on the demo, the texture-in-the-lungs shortcut's
    labels-only lines overlap the healthy models'), so a run that passes the rest is CANNOT VERIFY, saying so.
    ``no_finding_classes``: the class names that mean *the absence of a finding* (matched case-insensitively,
    ignoring surrounding spaces; :meth:`is_no_finding`). Such a class has no finding to annotate or to remove,
    so it alone may rest on the reliance evidence (E2–E6) the model showed for the other classes; any other
    class needs reliance evidence of its own. The default lists common names; give your dataset's
    no-finding class here when it is called something else (a class left out is judged strictly: CANNOT
    VERIFY without its own reliance evidence, never SUITABLE by mistake).
    """

    min_images: int = 20
    min_separation: float = 0.8
    e1_margin: float = 0.5
    confidence: float = 0.95
    max_not_assessable: float = 0.5
    faithfulness: bool = True
    e6_steps: int = 6
    counterfactuals: bool = True
    require_findings: bool = True
    no_finding_classes: tuple[str, ...] = NO_FINDING_CLASSES

    def is_no_finding(self, class_name: str) -> bool:
        """Whether ``class_name`` is the absence of a finding (one of ``no_finding_classes``, any case)."""
        return class_name.strip().casefold() in {c.strip().casefold() for c in self.no_finding_classes}

    def to_dict(self) -> dict[str, Any]:
        plain = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}  # JSON's own form

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> VerdictConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in doc.items() if k in known}
        if "no_finding_classes" in kw:
            names = kw["no_finding_classes"]
            if isinstance(names, str) or not isinstance(names, Sequence):
                raise TypeError(f"no_finding_classes: a list of class names, not {type(names).__name__}")
            kw["no_finding_classes"] = tuple(str(c) for c in names)
        return cls(**kw)


@dataclass(frozen=True)
class ClassLine:
    """One line's result for one class.

    ``value`` is the class's statistic (a mean, a rate, or Youden's J) with its interval ``low`` … ``high``
    (``interval`` names how it was computed); ``threshold`` is the calibrated edge, ``higher_is_better`` its
    direction; ``n`` the assessable images it used; ``numbers`` any further figures (sub-measures, baselines);
    ``reason`` a plain sentence saying why this status.
    """

    class_name: str
    status: Status
    value: float | None = None
    low: float | None = None
    high: float | None = None
    threshold: float | None = None
    higher_is_better: bool = True
    n: int = 0
    interval: str = ""
    numbers: Mapping[str, float | None] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class LineResult:
    """One evidence line over the whole run.

    ``status`` is the line's overall status (fail if any class fails, then inconclusive, pass, ...);
    ``decisive`` says whether it may decide a verdict (E1, E3, E4, E2 with annotations; E5 and E6 only where
    calibration showed they separate healthy from known-bad); ``calibration`` states where the thresholds came
    from; ``separation`` is the AUROC of healthy vs known-bad on the calibration set (None when not measured);
    ``sentence`` says the result in plain words.
    """

    key: str
    name: str
    status: Status
    decisive: bool
    per_class: tuple[ClassLine, ...] = ()
    calibration: str = ""
    separation: float | None = None
    numbers: Mapping[str, float | None] = field(default_factory=dict)
    sentence: str = ""

    @property
    def votes(self) -> bool:
        """Whether the line votes on the verdict: decisive, and not found uninformative by calibration."""
        return self.decisive and self.status != "uninformative"

    def for_class(self, class_name: str) -> ClassLine | None:
        for c in self.per_class:
            if c.class_name == class_name:
                return c
        return None


@dataclass(frozen=True)
class ImageEvidence:
    """One image: what the model said, whether it could be assessed, the per-line numbers and why.

    ``probabilities`` per model class (softmax; sigmoid for multi-label models); ``assessable`` False when the
    E0 gate removed it (``not_assessable_reason`` says why) — such an image never counts as passing evidence;
    ``values`` the per-image numbers of each line (``"E3.outside_energy"``, ...); ``why`` one plain sentence.
    """

    name: str
    label: str | None
    predicted: str | None
    probabilities: tuple[float, ...]
    assessable: bool
    not_assessable_reason: str | None = None
    values: Mapping[str, float | None] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class ClassVerdict:
    """One class: its verdict, the line that decided it, a plain reason, and its image counts."""

    class_name: str
    verdict: Verdict
    deciding_line: str | None
    reason: str
    n_images: int
    n_assessable: int
    missing: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return VERDICT_LABELS[self.verdict]


@dataclass(frozen=True)
class Example:
    """A map kept for the report: the image, the class it explains and its attention map (h, w) in [0, 1]."""

    image: str
    class_name: str | None
    map: np.ndarray
    note: str = ""


@dataclass(frozen=True)
class VerificationReport:
    """The verdict on one model and one dataset, with every number behind it.

    ``verdict`` / ``deciding_line`` / ``reason``: the model's (its worst class's); ``classes`` per class;
    ``lines`` the evidence lines E0 … E6; ``images`` per image; ``accuracy`` over labelled assessable images
    (None without labels) with its Wilson 95 % ``accuracy_interval``; ``n_not_assessable`` images removed by
    the E0 gate; ``errors`` unreadable images
    (name, message); ``missing`` what would be needed to verify (for CANNOT VERIFY); ``references`` the
    bundle's per-class reference maps and ``examples`` a few maps, both for the report; ``provenance`` model,
    bundle, method, layer, versions. ``task`` "multilabel": ``classes`` are the model's labels, one verdict
    per label from its binary task (:mod:`verification.verdict.multilabel`; ``n_images``: its positives).
    """

    verdict: Verdict
    deciding_line: str | None
    reason: str
    class_names: tuple[str, ...]
    classes: tuple[ClassVerdict, ...]
    lines: tuple[LineResult, ...]
    images: tuple[ImageEvidence, ...]
    accuracy: float | None
    n_images: int
    n_not_assessable: int
    config: VerdictConfig = field(default_factory=VerdictConfig)
    accuracy_interval: tuple[float, float] | None = None
    errors: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    references: Mapping[str, np.ndarray] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    task: str = "classification"

    # ------------------------------------------------------------------------------------------ reading
    @property
    def label(self) -> str:
        """``SUITABLE`` / ``UNSUITABLE`` / ``CANNOT VERIFY``."""
        return VERDICT_LABELS[self.verdict]

    @property
    def suitable(self) -> bool:
        return self.verdict == "suitable"

    def line(self, key: str) -> LineResult | None:
        for ln in self.lines:
            if ln.key == key:
                return ln
        return None

    def for_class(self, class_name: str) -> ClassVerdict | None:
        for c in self.classes:
            if c.class_name == class_name:
                return c
        return None

    @property
    def deciding_lines(self) -> tuple[str, ...]:
        """The deciding line's keys: one for UNSUITABLE and CANNOT VERIFY, every passed decisive line for
        SUITABLE (stored joined, "E1+E3+E4+E2"), none when no line decided."""
        return tuple(self.deciding_line.split("+")) if self.deciding_line else ()

    @property
    def decided_by(self) -> str | None:
        """The deciding line with its name ("E3" and its LINE_NAMES entry), None when no line decided."""
        if not self.deciding_line:
            return None
        return f"{self.deciding_line} {LINE_NAMES.get(self.deciding_line, '')}".rstrip()

    def headline(self) -> str:
        """The verdict in one line: "UNSUITABLE — decided by E3 …", the label alone when no line decided."""
        return self.label if self.decided_by is None else f"{self.label} — decided by {self.decided_by}"

    def text(self) -> str:
        """Plain words: the verdict, the deciding line, accuracy and what was left out."""
        acc = "n/a (no labels)" if self.accuracy is None else f"{100 * self.accuracy:.1f} %"
        head = self.label if self.decided_by is None else f"{self.label} (decided by {self.decided_by})"
        out = [
            f"{head}: {self.reason}",
            f"accuracy {acc}; {self.n_images} images, {self.n_not_assessable} not assessable"
            + (f", {len(self.errors)} unreadable" if self.errors else ""),
        ]
        if self.task == "multilabel":
            out.append(MULTILABEL_NOTE)
        for c in self.classes:
            by = f" [{c.deciding_line}]" if c.deciding_line else ""
            counted = "positives assessable" if self.task == "multilabel" else "assessable"
            out.append(
                f"  {c.class_name}: {c.label}{by} — {c.reason} ({c.n_assessable}/{c.n_images} {counted})"
            )
        for ln in self.lines:
            votes = "" if ln.votes else " (does not vote)"
            out.append(f"  {ln.key} {ln.name}: {ln.status}{votes} — {ln.sentence}")
        return "\n".join(out)

    # ------------------------------------------------------------------------------------------ documents
    def to_document(self) -> dict[str, Any]:
        """The JSON-ready document (plain dicts, lists, numbers, strings; NaN as null)."""
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict,
            "verdict_label": self.label,
            "deciding_line": self.deciding_line,
            "reason": self.reason,
            "text": self.text(),
            "class_names": list(self.class_names),
            "accuracy": _num(self.accuracy),
            "accuracy_interval": None if self.accuracy_interval is None else list(self.accuracy_interval),
            "n_images": self.n_images,
            "n_not_assessable": self.n_not_assessable,
            "config": self.config.to_dict(),
            "classes": [
                {**_plain(c), "missing": list(c.missing), "verdict_label": c.label} for c in self.classes
            ],
            "lines": [
                {**_plain(ln, skip=("per_class",)), "per_class": [_plain(c) for c in ln.per_class]}
                for ln in self.lines
            ],
            "images": [_plain(im) for im in self.images],
            "errors": [{"image": n, "error": e} for n, e in self.errors],
            "warnings": list(self.warnings),
            "missing": list(self.missing),
            "examples": [
                {"image": e.image, "class_name": e.class_name, "note": e.note, "map": _round(e.map)}
                for e in self.examples
            ],
            "references": {k: _round(v) for k, v in self.references.items()},
            "provenance": _jsonable(dict(self.provenance)),
            **({} if self.task == "classification" else {"task": self.task}),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> VerificationReport:
        """Inverse of :meth:`to_document`; raises BundleError for another schema or a newer version."""
        if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA:
            raise BundleError(
                "not a verification result (expected the JSON written by 'verify --json' or the dashboard's "
                "download)"
            )
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(
                f"verification result schema_version {doc.get('schema_version')!r}; this version reads "
                f"{SCHEMA_VERSION}"
            )
        try:
            return cls(
                verdict=cast(Verdict, _check(doc["verdict"], VERDICTS)),
                deciding_line=doc.get("deciding_line"),
                reason=str(doc["reason"]),
                class_names=tuple(doc["class_names"]),
                classes=tuple(_class_verdict(c) for c in doc["classes"]),
                lines=tuple(_line(ln) for ln in doc["lines"]),
                images=tuple(_image(im) for im in doc["images"]),
                accuracy=_opt(doc.get("accuracy")),
                n_images=int(doc["n_images"]),
                n_not_assessable=int(doc["n_not_assessable"]),
                config=VerdictConfig.from_dict(doc.get("config", {})),
                accuracy_interval=_pair(doc.get("accuracy_interval")),
                errors=tuple((str(e["image"]), str(e["error"])) for e in doc.get("errors", [])),
                warnings=tuple(doc.get("warnings", [])),
                missing=tuple(doc.get("missing", [])),
                examples=tuple(
                    Example(
                        e["image"], e.get("class_name"), np.asarray(e["map"], np.float32), e.get("note", "")
                    )
                    for e in doc.get("examples", [])
                ),
                references={k: np.asarray(v, np.float32) for k, v in doc.get("references", {}).items()},
                provenance=dict(doc.get("provenance", {})),
                task=str(doc.get("task", "classification")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"verification result is incomplete or malformed: {exc!r}") from exc


# ---------------------------------------------------------------------------------------------- helpers
def _num(v: Any) -> Any:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) or math.isinf(f) else f


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def _pair(v: Any) -> tuple[float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]))


def _floats(d: Mapping[str, Any]) -> dict[str, float | None]:
    return {str(k): _opt(v) for k, v in d.items()}


def _check(value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {list(allowed)}")
    return str(value)


def _round(a: np.ndarray) -> list[Any]:
    return cast(list[Any], np.round(np.asarray(a, dtype=np.float64), 3).tolist())


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float):
        return _num(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)


def _plain(obj: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj) if f.name not in skip}


def _class_line(c: Mapping[str, Any]) -> ClassLine:
    return ClassLine(
        class_name=c["class_name"],
        status=cast(Status, _check(c["status"], STATUSES)),
        value=_opt(c.get("value")),
        low=_opt(c.get("low")),
        high=_opt(c.get("high")),
        threshold=_opt(c.get("threshold")),
        higher_is_better=bool(c.get("higher_is_better", True)),
        n=int(c.get("n", 0)),
        interval=str(c.get("interval", "")),
        numbers=_floats(c.get("numbers", {})),
        reason=str(c.get("reason", "")),
    )


def _class_verdict(c: Mapping[str, Any]) -> ClassVerdict:
    return ClassVerdict(
        class_name=c["class_name"],
        verdict=cast(Verdict, _check(c["verdict"], VERDICTS)),
        deciding_line=c.get("deciding_line"),
        reason=str(c["reason"]),
        n_images=int(c["n_images"]),
        n_assessable=int(c["n_assessable"]),
        missing=tuple(c.get("missing", ())),
    )


def _image(im: Mapping[str, Any]) -> ImageEvidence:
    return ImageEvidence(
        name=im["name"],
        label=im.get("label"),
        predicted=im.get("predicted"),
        probabilities=tuple(float(p) for p in im["probabilities"]),
        assessable=bool(im["assessable"]),
        not_assessable_reason=im.get("not_assessable_reason"),
        values=_floats(im.get("values", {})),
        why=str(im.get("why", "")),
    )


def _line(ln: Mapping[str, Any]) -> LineResult:
    return LineResult(
        key=ln["key"],
        name=ln["name"],
        status=cast(Status, _check(ln["status"], STATUSES)),
        decisive=bool(ln["decisive"]),
        per_class=tuple(_class_line(c) for c in ln.get("per_class", [])),
        calibration=str(ln.get("calibration", "")),
        separation=_opt(ln.get("separation")),
        numbers=_floats(ln.get("numbers", {})),
        sentence=str(ln.get("sentence", "")),
    )
