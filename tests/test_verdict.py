"""The verdict's statistics, calibration, lines and combiner on hand-built measurements (no model, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from verification.verdict import VerdictConfig, VerificationReport
from verification.verdict.calibration import Calibration, Edge, calibrate
from verification.verdict.combine import combine
from verification.verdict.lines import evaluate_lines, line_e0
from verification.verdict.measure import Measurements
from verification.verdict.records import LINE_NAMES, ClassLine, LineResult, Status
from verification.verdict.stats import auroc, judge, mean_interval, wilson

CLASSES = ("normal", "nodule", "effusion")
METRICS = ("iou",)
CFG = VerdictConfig(min_images=20, require_findings=False)  # toy runs carry no annotations


def measurements(
    labels: np.ndarray,
    predicted: np.ndarray,
    values: dict[str, np.ndarray] | None = None,
    assessable: np.ndarray | None = None,
    has_finding: np.ndarray | None = None,
) -> Measurements:
    n = len(labels)
    probs = np.full((n, 3), 0.05, np.float32)
    probs[np.arange(n), np.maximum(predicted, 0)] = 0.9
    return Measurements(
        names=tuple(f"img{i}" for i in range(n)),
        class_names=CLASSES,
        model_classes=CLASSES,
        labels=np.asarray(labels, np.int64),
        predicted=np.asarray(predicted, np.int64),
        probs=probs,
        assessable=np.ones(n, bool) if assessable is None else assessable,
        gate_reasons=tuple(None if assessable is None or assessable[i] else "gated" for i in range(n)),
        has_finding=np.zeros(n, bool) if has_finding is None else has_finding,
        values=values or {},
        maps=np.zeros((n, 4, 4), np.float32),
        lesions=np.zeros((n, 4, 4), np.float32),
    )


def healthy_values(n: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "E3.outside_energy": np.clip(0.15 + shift + 0.05 * rng.standard_normal(n), 0, 1),
        "E3.outside_drop": 0.02 + shift + 0.02 * rng.standard_normal(n),
        "E3.inside_survival": np.clip(0.05 + shift + 0.03 * rng.standard_normal(n), 0, 1),
    }


def balanced(n_per: int) -> np.ndarray:
    return np.repeat(np.arange(3), n_per)


# ---------------------------------------------------------------------------------------------- statistics
def test_wilson_by_hand() -> None:
    z2 = 1.959963984540054**2
    p, lo, hi = wilson(0, 20)
    assert p == 0.0
    assert lo == 0.0
    assert hi == pytest.approx(z2 / (20 + z2))  # k = 0: the upper edge is z²/(n + z²)
    p, lo, hi = wilson(20, 20)
    assert hi == 1.0
    assert lo == pytest.approx(20 / (20 + z2))
    assert wilson(0, 0)[1:] == (0.0, 1.0)


def test_auroc_matches_sklearn_and_direction() -> None:
    rng = np.random.default_rng(0)
    bad, healthy = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 1.0, 50)
    expected = roc_auc_score(np.r_[np.zeros(50), np.ones(40)], np.r_[healthy, bad])
    assert auroc(bad, healthy, higher_is_better=False) == pytest.approx(expected)
    assert auroc(-bad, -healthy, higher_is_better=True) == pytest.approx(expected)
    assert auroc([1.0, 1.0], [1.0, 1.0], False) == pytest.approx(0.5)  # ties count one half


def test_judge_three_ways_and_t_interval() -> None:
    assert judge(0.6, 0.8, 0.5, True) == "pass"
    assert judge(0.1, 0.4, 0.5, True) == "fail"
    assert judge(0.4, 0.6, 0.5, True) == "inconclusive"
    assert judge(0.1, 0.2, 0.3, False) == "pass"
    assert judge(0.4, 0.5, 0.3, False) == "fail"
    m, _lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0
    assert hi - m == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3))  # t(0.975, 2) · s / √n


# ---------------------------------------------------------------------------------------------- calibration
def test_quantity_that_cannot_separate_is_uninformative_and_a_separating_one_is_not() -> None:
    rng = np.random.default_rng(1)
    lab = balanced(30)
    healthy = {f"h{i}": measurements(lab, lab, healthy_values(90, rng)) for i in range(3)}
    same = measurements(lab, lab, healthy_values(90, rng))  # a "bad" model that looks healthy
    shortcut = measurements(lab, lab, healthy_values(90, rng, shift=0.5))
    cal_none = calibrate(healthy, {"lookalike": same})
    assert all(not e.informative for e in cal_none.edges)
    assert all("separates" in e.note or "range" in e.note for e in cal_none.edges)
    cal = calibrate(healthy, {"shortcut": shortcut})
    edge = cal.edge("E3.outside_energy", "nodule")
    assert edge is not None
    assert edge.informative
    assert edge.auroc is not None
    assert edge.auroc > 0.95
    assert edge.threshold is not None
    assert edge.healthy_edge is not None
    assert edge.threshold > edge.healthy_edge
    assert "3 models" in cal.scheme
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.edge("E3.outside_energy", "nodule") == edge


def test_a_band_that_cannot_fail_is_uninformative_by_construction() -> None:
    rng = np.random.default_rng(2)
    lab = balanced(30)
    v = {"E3.inside_survival": np.clip(0.97 + 0.02 * rng.standard_normal(90), 0, 1)}
    healthy = {f"h{i}": measurements(lab, lab, dict(v)) for i in range(2)}
    bad = measurements(lab, lab, {"E3.inside_survival": np.ones(90)})
    cal = calibrate(healthy, {"bad": bad})
    for e in cal.edges:
        assert e.threshold is not None
        assert e.threshold > 1.0
        assert not e.informative
        assert "cannot fail" in e.note


def test_one_trusted_model_uses_a_bootstrap() -> None:
    rng = np.random.default_rng(3)
    lab = balanced(30)
    cal = calibrate(
        {"trusted": measurements(lab, lab, healthy_values(90, rng))},
        {"bad": measurements(lab, lab, healthy_values(90, rng, 0.5))},
    )
    assert "bootstrap" in cal.scheme
    e = cal.edge("E3.outside_drop", "normal")
    assert e is not None
    assert len(e.healthy) == 3


# ---------------------------------------------------------------------------------------------- combiner
def _calibrated(rng: np.random.Generator) -> Calibration:
    lab = balanced(30)
    healthy = {f"h{i}": measurements(lab, lab, healthy_values(90, rng)) for i in range(3)}
    return calibrate(healthy, {"bad": measurements(lab, lab, healthy_values(90, rng, 0.5))})


def _report(m: Measurements, cal: Calibration | None) -> tuple:
    lines = evaluate_lines(m, cal, CFG, METRICS)
    return combine(m, lines, CFG), lines


def test_healthy_is_suitable_and_shortcut_reliance_is_unsuitable_naming_e3() -> None:
    rng = np.random.default_rng(4)
    cal = _calibrated(rng)
    lab = balanced(25)
    (classes, verdict, deciding, _, _), _ = _report(measurements(lab, lab, healthy_values(75, rng)), cal)
    assert verdict == "suitable", classes
    assert all(c.verdict == "suitable" and "E1" in str(c.deciding_line) for c in classes)
    (classes, verdict, deciding, reason, _), _ = _report(
        measurements(lab, lab, healthy_values(75, rng, 0.5)), cal
    )
    assert verdict == "unsuitable"
    assert deciding == "E3"
    assert "E3" in reason


def test_a_model_at_chance_is_never_suitable() -> None:
    rng = np.random.default_rng(5)
    cal = _calibrated(rng)
    lab = balanced(30)
    everything_effusion = np.full(90, 2)
    (classes, verdict, deciding, _, _), _lines = _report(
        measurements(lab, everything_effusion, healthy_values(90, rng)), cal
    )
    assert verdict == "unsuitable"
    assert deciding == "E1"
    assert {c.verdict for c in classes} == {"unsuitable"}
    # random guessing: never suitable either (unsuitable or cannot verify, whatever the draw)
    for seed in range(5):
        guess = np.random.default_rng(seed).integers(0, 3, 90)
        (_, verdict, _, _, _), _ = _report(measurements(lab, guess, healthy_values(90, rng)), cal)
        assert verdict != "suitable"


def test_no_measurements_and_no_labels_are_cannot_verify() -> None:
    cal = _calibrated(np.random.default_rng(6))
    empty = measurements(np.zeros(0, np.int64), np.zeros(0, np.int64))
    (_, verdict, _, _reason, missing), _ = _report(empty, cal)
    assert verdict == "cannot_verify"
    assert missing
    lab = balanced(25)
    unlabelled = measurements(np.full(75, -1), lab, healthy_values(75, np.random.default_rng(7)))
    (_classes, verdict, _, _, missing), _ = _report(unlabelled, cal)
    assert verdict == "cannot_verify"
    assert any("labels" in m for m in missing)


def test_without_calibration_e3_is_not_assessable_and_nothing_is_suitable() -> None:
    rng = np.random.default_rng(8)
    lab = balanced(25)
    m = measurements(lab, lab, healthy_values(75, rng))
    (_classes, verdict, deciding, _, _), lines = _report(m, None)
    e3 = next(ln for ln in lines if ln.key == "E3")
    assert e3.status == "not_assessable"
    assert "no calibration" in e3.per_class[0].reason
    assert verdict == "cannot_verify"
    assert deciding == "E3"


def test_not_assessable_images_never_count_as_passing() -> None:
    rng = np.random.default_rng(9)
    cal = _calibrated(rng)
    lab = balanced(25)
    gated = np.ones(75, bool)
    gated[lab == 1] = np.arange(25) < 10  # 15 of 25 nodule images removed by the gate
    (classes, verdict, _deciding, _, _), lines = _report(
        measurements(lab, lab, healthy_values(75, rng), assessable=gated), cal
    )
    nodule = next(c for c in classes if c.class_name == "nodule")
    assert (nodule.n_images, nodule.n_assessable) == (25, 10)
    assert nodule.verdict == "cannot_verify"
    assert nodule.deciding_line == "E0"
    assert verdict == "cannot_verify"
    e1 = next(ln for ln in lines if ln.key == "E1").for_class("nodule")
    assert e1 is not None
    assert e1.numbers["positives"] == 10


def test_per_class_results_add_up_to_the_model() -> None:
    rng = np.random.default_rng(10)
    cal = _calibrated(rng)
    lab = balanced(25)
    gated = rng.random(75) > 0.1
    m = measurements(lab, lab, healthy_values(75, rng), assessable=gated)
    (classes, verdict, *_), lines = _report(m, cal)
    assert sum(c.n_images for c in classes) == m.n
    assert sum(c.n_assessable for c in classes) == int(gated.sum())
    worst = max(classes, key=lambda c: {"suitable": 0, "cannot_verify": 1, "unsuitable": 2}[c.verdict])
    assert verdict == worst.verdict
    e1 = next(ln for ln in lines if ln.key == "E1")
    assert sum(c.numbers["positives"] or 0 for c in e1.per_class) == int(gated.sum())


def test_uninformative_edges_do_not_vote() -> None:
    rng = np.random.default_rng(11)
    lab = balanced(25)
    edges = tuple(
        Edge(k, c, 0.01, False, 0.55, 0.0, 0.0, note="overlaps")
        for k in ("E3.outside_energy",)
        for c in CLASSES
    )
    cal = Calibration("test", ("h",), ("b",), edges, 75)
    (_classes, verdict, *_), lines = _report(measurements(lab, lab, healthy_values(75, rng, 0.5)), cal)
    e3 = next(ln for ln in lines if ln.key == "E3")
    assert all(c.status != "fail" for c in e3.per_class)  # far beyond 0.01, but the edge has no power
    assert verdict == "cannot_verify"  # E1 passed, but nothing shows why the model decides


def test_report_document_round_trip() -> None:
    from verification.verdict.api import assemble

    class _Bundle:
        calibration = _calibrated(np.random.default_rng(12))
        metrics = METRICS
        class_names = CLASSES
        references = np.zeros((3, 4, 4), np.float32)
        counts = np.array([1, 1, 1])
        method, layer, grid, created, model_hash, schema_version = "gradcam", "x", (4, 4), "", None, 2

    class _Model:
        task, name, content_hash, architecture = "classification", "m", "h", "toy"
        class_names, input_size = CLASSES, (4, 4)

    lab = balanced(25)
    m = measurements(lab, lab, healthy_values(75, np.random.default_rng(13)))
    rep = assemble(m, _Model(), _Bundle(), CFG)  # type: ignore[arg-type]
    doc = json.loads(json.dumps(rep.to_document()))
    back = VerificationReport.from_document(doc)
    assert back.to_document() == doc
    assert back.verdict == rep.verdict
    assert back.lines[3].per_class == rep.lines[3].per_class
    with pytest.raises(Exception, match="not a verification result"):
        VerificationReport.from_document({"schema": "other"})


def test_a_sub_measure_the_bundle_has_no_edge_for_does_not_block() -> None:
    rng = np.random.default_rng(14)
    cal = _calibrated(rng)  # calibrated on E3's outside energy, drop and survival only
    lab = balanced(25)
    values = healthy_values(75, rng)
    values["E3.texture_drop"] = np.zeros(75)  # measured, but the bundle predates it: no edge
    (_classes, verdict, *_), lines = _report(measurements(lab, lab, values), cal)
    e3 = next(ln for ln in lines if ln.key == "E3")
    assert all(c.status == "pass" for c in e3.per_class)
    assert verdict == "suitable"


def test_without_finding_annotations_a_model_that_passes_everything_cannot_be_verified() -> None:
    """Labels alone cannot tell a finding from a cue inside the anatomy: no SUITABLE without annotations."""
    rng = np.random.default_rng(4)
    cal = _calibrated(rng)
    lab = balanced(25)
    m = measurements(lab, lab, healthy_values(75, rng))
    strict = VerdictConfig(min_images=20)  # require_findings defaults on
    lines = evaluate_lines(m, cal, strict, METRICS)
    classes, verdict, deciding, _reason, missing = combine(m, lines, strict)
    assert verdict == "cannot_verify", classes
    assert deciding == "E4"
    assert any("finding annotations" in w for w in missing)
    # the same measurements pass once the rule is off: the rule, not another line, decided
    lines = evaluate_lines(m, cal, CFG, METRICS)
    assert combine(m, lines, CFG)[1] == "suitable"


def test_read_images_skips_an_unreadable_file_with_its_reason(tmp_path: Path) -> None:
    """The one image reader of verify (single- and multi-label): a file that cannot be read is left out with
    its name and reason, the others keep their indices; a tensor is taken as preprocessed."""
    import torch
    from PIL import Image
    from torch import nn

    from tests.builders import loaded_model
    from verification.verdict.api import read_images

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(good)
    bad.write_bytes(b"not an image")
    model = loaded_model(nn.Identity(), input_size=(8, 8), mean=(0.5,), std=(0.25,))
    x, ok, names, errors = read_images([good, bad, good], model, start=1, stop=3)
    assert (ok, names, tuple(x.shape)) == ([2], [str(good)], (1, 1, 8, 8))
    assert [name for name, _ in errors] == [str(bad)]
    assert errors[0][1]
    t = torch.zeros(5, 1, 8, 8, dtype=torch.float64)
    x, ok, names, errors = read_images(t, model, ["p", "q", "r", "s", "u"], 1, 3)
    assert (ok, names, x.dtype, errors) == ([1, 2], ["q", "r"], torch.float32, [])


def test_label_indices_reads_names_and_indices_and_refuses_a_label_set() -> None:
    from verification.errors import InvalidInputError
    from verification.verdict.api import label_indices

    got = label_indices(["nodule", 2, None, "unknown", 7, np.int64(0)], CLASSES, 6)
    assert got.tolist() == [1, 2, -1, -1, -1, 0]
    assert label_indices(None, CLASSES, 2).tolist() == [-1, -1]
    with pytest.raises(InvalidInputError, match="one class per image"):
        label_indices(["normal", ["nodule", "effusion"]], CLASSES, 2)


def test_text_says_a_decisive_but_uninformative_line_does_not_vote() -> None:
    import dataclasses

    from verification.verdict.records import LINE_NAMES, LineResult

    lines = (
        LineResult("E1", "accuracy", "pass", True, sentence="s1"),
        LineResult("E5", "agreement", "uninformative", True, sentence="s5"),
        LineResult("E6", "faithfulness", "pass", False, sentence="s6"),
    )
    report = VerificationReport(
        verdict="suitable",
        deciding_line=None,
        reason="r",
        class_names=CLASSES,
        classes=(),
        lines=lines,
        images=(),
        accuracy=None,
        n_images=0,
        n_not_assessable=0,
    )
    text = report.text()
    assert "E1 accuracy: pass — s1" in text
    assert "E5 agreement: uninformative (does not vote) — s5" in text
    assert "E6 faithfulness: pass (does not vote) — s6" in text
    assert report.decided_by is None
    assert report.headline() == report.label
    decided = dataclasses.replace(report, verdict="unsuitable", deciding_line="E3")
    assert decided.decided_by == f"E3 {LINE_NAMES['E3']}"
    assert decided.headline() == f"{decided.label} — decided by E3 {LINE_NAMES['E3']}"
    assert decided.text().startswith(f"{decided.label} (decided by E3 {LINE_NAMES['E3']}): r")


# ------------------------------------------------- combiner rules on hand-built lines (review of 1 Dec 2026)
def _line(key: str, status: dict[str, Status], decisive: bool = True, default: Status = "pass") -> LineResult:
    """A hand-built line: ``default`` for every class but those named in ``status``."""
    per = tuple(ClassLine(c, s, reason=f"{key} {s}") for c in CLASSES for s in [status.get(c, default)])
    return LineResult(key, key, "pass", decisive, per)


def _findings_run(n_per: int, gated_per_class: int = 0) -> Measurements:
    """Every class labelled and predicted right; nodule and effusion images carry annotated findings; the
    first ``gated_per_class`` images of each class removed by the input gate."""
    lab = balanced(n_per)
    assessable = np.tile(np.arange(n_per) >= gated_per_class, 3)
    return measurements(lab, lab, assessable=assessable, has_finding=(lab > 0) & assessable)


def _passing(m: Measurements, *extra: LineResult) -> list[LineResult]:
    none: dict[str, Status] = {
        "normal": "not_assessable"
    }  # no finding to localise or remove on a normal image
    return [
        line_e0(m, CFG),
        _line("E1", {}),
        _line("E2", none),
        _line("E3", {}),
        _line("E4", none),
        *extra,
    ]


def test_too_many_images_not_assessable_cannot_be_verified_but_a_failure_still_decides() -> None:
    """METHODS §3: CANNOT VERIFY when too many images are not assessable (E0, ``max_not_assessable``). Before
    the fix the combiner never read it: 90 of 150 images gated, every line passing → SUITABLE."""
    m = _findings_run(50, gated_per_class=30)  # 20 assessable per class: enough for min_images
    lines = _passing(m)
    assert lines[0].status == "not_assessable"
    classes, verdict, deciding, reason, missing = combine(m, lines, CFG)
    assert verdict == "cannot_verify", classes
    assert deciding == "E0"
    assert {c.verdict for c in classes} == {"cannot_verify"}
    assert "90 of the run's 150 images" in reason
    assert "60.0 %" in reason
    assert "50 %" in reason
    assert "max_not_assessable" in reason
    assert any("at most 50 %" in w for w in missing)
    # without labels or annotations E0 still decides, and the missing ground truth is said too
    blind = measurements(np.full(m.n, -1), m.predicted, assessable=m.assessable)
    _, verdict, deciding, _, missing = combine(blind, _passing(blind), CFG)
    assert (verdict, deciding) == ("cannot_verify", "E0")
    assert any("at most 50 %" in w for w in missing)
    assert any("labels" in w for w in missing)
    # the same run within the limit is suitable: the share, not another line, decided
    ok = _findings_run(50, gated_per_class=20)
    assert combine(ok, _passing(ok), CFG)[1] == "suitable"
    # a clear failure on the assessable images still decides: UNSUITABLE wins over CANNOT VERIFY
    fail = [*lines[:3], _line("E3", {"nodule": "fail"}), *lines[4:]]
    classes, verdict, deciding, _reason, _ = combine(m, fail, CFG)
    assert (verdict, deciding) == ("unsuitable", "E3")
    assert [c.verdict for c in classes] == ["cannot_verify", "unsuitable", "cannot_verify"]


def test_too_many_of_one_class_not_assessable_makes_that_class_cannot_verify() -> None:
    lab = balanced(50)
    assessable = np.ones(150, bool)
    assessable[50:80] = False  # 30 of 50 nodule images gated; 30 of 150 over the run (within the limit)
    m = measurements(lab, lab, assessable=assessable, has_finding=(lab > 0) & assessable)
    classes, verdict, deciding, reason, _ = combine(m, _passing(m), CFG)
    by = {c.class_name: c for c in classes}
    assert by["nodule"].verdict == "cannot_verify"
    assert by["nodule"].deciding_line == "E0"
    assert "30 of the 50 images of 'nodule'" in by["nodule"].reason
    assert by["normal"].verdict == by["effusion"].verdict == "suitable"
    assert (verdict, deciding) == ("cannot_verify", "E0")
    assert reason.startswith("nodule: too many images not assessable")


def test_only_a_no_finding_class_borrows_reliance_evidence() -> None:
    """A finding class with no annotated finding and no informative reliance line of its own is CANNOT
    VERIFY, saying what is missing. Before the fix it borrowed nodule's E2/E3/E4 pass: SUITABLE on E1
    alone."""
    lab = balanced(30)
    m = measurements(lab, lab, has_finding=lab == 1)  # only nodule is annotated
    none: dict[str, Status] = {"normal": "not_assessable", "effusion": "not_assessable"}
    lines = [
        line_e0(m, CFG),
        _line("E1", {}),
        _line("E2", none),
        _line("E3", {"normal": "uninformative", "effusion": "uninformative"}),
        _line("E4", none),
    ]
    classes, verdict, _deciding, _reason, missing = combine(m, lines, CFG)
    by = {c.class_name: c for c in classes}
    assert by["effusion"].verdict == "cannot_verify"
    assert by["effusion"].deciding_line == "E3"
    assert "reliance evidence of 'effusion' itself" in by["effusion"].reason
    assert "no_finding_classes" in by["effusion"].reason
    assert any("'effusion'" in w for w in missing)
    assert by["nodule"].verdict == "suitable"
    assert by["normal"].verdict == "suitable"  # the absence of a finding borrows nodule's reliance pass
    assert by["normal"].deciding_line == "E1"
    assert "no-finding class" in by["normal"].reason
    assert verdict == "cannot_verify"
    # the no-finding class is named explicitly: without it in the list, "normal" borrows nothing either
    strict = VerdictConfig(min_images=20, require_findings=False, no_finding_classes=("healthy",))
    by = {c.class_name: c for c in combine(m, lines, strict)[0]}
    assert by["normal"].verdict == "cannot_verify"
    assert "reliance evidence of 'normal' itself" in by["normal"].reason
    # nothing to borrow from: a no-finding class needs some other class's reliance pass
    nothing = [*lines[:2], *(_line(k, {}, default="uninformative") for k in ("E2", "E3", "E4"))]
    by = {c.class_name: c for c in combine(m, nothing, CFG)[0]}
    assert by["normal"].verdict == "cannot_verify"
    assert "a passing line showing the model decides" in by["normal"].reason


def test_no_finding_classes_match_case_insensitively_and_round_trip() -> None:
    cfg = VerdictConfig()
    assert cfg.is_no_finding("Normal")
    assert cfg.is_no_finding(" No Finding ")
    assert cfg.is_no_finding("NO_FINDING")
    assert not cfg.is_no_finding("effusion")
    assert not cfg.is_no_finding("abnormal")
    custom = VerdictConfig(no_finding_classes=("Unremarkable",))
    doc = json.loads(json.dumps(custom.to_dict()))
    assert doc["no_finding_classes"] == ["Unremarkable"]
    back = VerdictConfig.from_dict(doc)
    assert back == custom
    assert back.is_no_finding("unremarkable")
    assert VerdictConfig.from_dict({}) == VerdictConfig()  # a document written before the field
    with pytest.raises(TypeError, match="list of class names"):
        VerdictConfig.from_dict({"no_finding_classes": "normal"})


def test_an_inconclusive_informative_e5_or_e6_blocks_suitable_and_an_uninformative_one_does_not() -> None:
    """METHODS §3: SUITABLE only when every assessable decisive line passes. Before the fix an informative
    (decisive) E5 inconclusive for every class left the verdict SUITABLE."""
    m = _findings_run(25)
    for key in ("E5", "E6"):
        inconclusive = _line(key, {}, default="inconclusive")
        classes, verdict, deciding, reason, missing = combine(m, _passing(m, inconclusive), CFG)
        assert (verdict, deciding) == ("cannot_verify", key), classes
        assert f"{key} {LINE_NAMES[key]} inconclusive for 'normal'" in reason
        assert missing
    # uninformative (the line does not vote), or not decisive: no effect
    uninformative = _line("E5", {}, default="uninformative")
    assert combine(m, _passing(m, uninformative), CFG)[1] == "suitable"
    not_decisive = _line("E6", {}, decisive=False, default="inconclusive")
    assert combine(m, _passing(m, not_decisive), CFG)[1] == "suitable"
