"""One verdict per label (issue #15): a multi-label model is verified label by label, each label on its own
binary task with the single-label lines, and a label with too few positives is CANNOT VERIFY, never SUITABLE.

The world (64×64, built here, seeded): a noisy film with a rectangular "lung" region; a *nodule* is a bright
disc inside it, an *effusion* a dark disc. The model is hand-built so its behaviour is known: a 5×5 box filter
per finding (bright / dark) → ReLU → global max → one logit per label, so it decides from the finding and from
nothing else. Calibration: this model and a slightly different healthy copy, against the cascading-randomised
model. The verification set has 22 nodule positives and only 3 effusion positives (``min_images`` is 20)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from verification.io.records import LoadedModel
from verification.multilabel import build_label_reference
from verification.verdict import VerdictConfig, VerificationReport, calibrate_bundle, verify

LABELS = ("nodule", "effusion")
SIZE = 64


class Detector(nn.Module):
    def __init__(self, gain: float = 10.0, effusion_sees: str = "dark") -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 5, padding=2), nn.ReLU())
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            conv = self.features[0]
            assert isinstance(conv, nn.Conv2d)
            conv.weight.zero_()
            conv.weight[0] = 1 / 25  # bright disc (normalised 1.6 on a −0.8 background)
            conv.weight[1] = -1 / 25  # dark disc (normalised −2.0)
            assert conv.bias is not None
            conv.bias.copy_(torch.tensor([-0.4, -1.2]))
            if effusion_sees == "bright":  # a broken effusion head: it fires on the nodule's bright disc
                conv.weight[1] = 1 / 25
                conv.bias[1] = -0.4
            self.head.weight.copy_(torch.tensor([[gain, 0.0], [0.0, gain]]))
            self.head.bias.copy_(torch.tensor([-5.0, -4.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def model(gain: float = 10.0, name: str = "detector", effusion_sees: str = "dark") -> LoadedModel:
    return LoadedModel(
        module=Detector(gain, effusion_sees).eval(),
        in_channels=1,
        input_size=(SIZE, SIZE),
        class_names=LABELS,
        mean=(0.5,),
        std=(0.25,),
        source_format="module",
        content_hash=f"{name}-{gain}-{effusion_sees}",
        task="multilabel",
        name=name,
    )


LUNG = np.zeros((SIZE, SIZE), bool)
LUNG[8:56, 10:54] = True


def world(n_nodule: int, n_effusion: int, n_none: int, seed: int) -> tuple[torch.Tensor, list, list, list]:
    """(inputs (N, 1, 64, 64) normalised, label sets, finding masks, anatomy masks)."""
    rng = np.random.default_rng(seed)
    kinds = ["nodule"] * n_nodule + ["effusion"] * n_effusion + [None] * n_none
    xs, sets, masks = [], [], []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for kind in kinds:
        img = np.clip(0.3 + 0.04 * rng.standard_normal((SIZE, SIZE)), 0, 1)
        img[~LUNG] = np.clip(0.15 + 0.04 * rng.standard_normal(int((~LUNG).sum())), 0, 1)
        mask = None
        if kind is not None:
            cy, cx = rng.integers(16, 48), rng.integers(18, 46)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
            img[mask] = 0.9 if kind == "nodule" else 0.0
        xs.append((img - 0.5) / 0.25)
        sets.append([kind] if kind else [])
        masks.append(mask)
    x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32))
    return x, sets, masks, [LUNG.copy() for _ in kinds]


@pytest.fixture(scope="module")
def bundle() -> Any:
    torch.set_num_threads(1)
    trusted = model()
    x_ref, sets_ref, masks_ref, lung_ref = world(24, 10, 10, seed=0)
    built = build_label_reference(trusted, x_ref, sets_ref, layer="features", grid=(32, 32))
    return calibrate_bundle(
        built,
        {"detector": trusted, "detector-9": model(9.0, "detector-9")},
        x_ref,
        sets_ref,
        annotations=masks_ref,
        anatomy=lung_ref,
    )


@pytest.fixture(scope="module")
def report(bundle: Any) -> VerificationReport:
    x, sets, masks, lungs = world(22, 3, 12, seed=1)
    return verify(model(), bundle, x, sets, annotations=masks, anatomy=lungs, config=VerdictConfig())


def test_each_label_has_its_own_verdict(report: VerificationReport) -> None:
    assert report.task == "multilabel"
    assert report.class_names == LABELS
    nodule, effusion = report.for_class("nodule"), report.for_class("effusion")
    assert nodule is not None
    assert effusion is not None
    # positives are the images annotated with the label (not the predictions, not the other label's)
    assert (nodule.n_images, effusion.n_images) == (22, 3)
    # enough positives, a detector that decides from the finding: every decisive line passes
    assert nodule.verdict == "suitable", nodule.reason
    assert "E2" in (nodule.deciding_line or "")
    # three positives cannot support a claim to a clinician, however good they look
    assert effusion.verdict == "cannot_verify"
    assert effusion.deciding_line == "E0"
    assert "at least 20 assessable images of 'effusion' (3 of 3" in effusion.reason
    for key in ("E2", "E3", "E4"):  # its lines look fine on three images: the count alone decides
        line = report.line(key)
        assert line is not None
        assert (c := line.for_class("effusion")) is not None
        assert c.status == "pass"
    # the model's verdict is its worst label's, and says which
    assert report.verdict == "cannot_verify"
    assert report.reason.startswith("effusion: too few")


def test_lines_hold_one_entry_per_label_from_its_binary_task(report: VerificationReport) -> None:
    e1 = report.line("E1")
    assert e1 is not None
    assert [c.class_name for c in e1.per_class] == list(LABELS)
    nod = e1.for_class("nodule")
    assert nod is not None
    # binary task: positives = the 22 nodule images, negatives = the other 15 (effusion + none)
    assert nod.numbers["positives"] == 22
    assert nod.numbers["negatives"] == 15
    assert nod.status == "pass"
    eff = e1.for_class("effusion")
    assert eff is not None
    assert (eff.numbers["positives"], eff.numbers["negatives"]) == (3, 34)


def test_images_carry_label_sets_and_sigmoid_probabilities(report: VerificationReport) -> None:
    first, last = report.images[0], report.images[-1]
    assert first.label == "nodule"
    assert first.predicted == "nodule"
    assert last.label == "(none of the labels)"
    x, *_ = world(22, 3, 12, seed=1)
    with torch.no_grad():
        p = torch.sigmoid(model().module(x)).numpy()
    got = np.array([im.probabilities for im in report.images])
    np.testing.assert_allclose(got, p, rtol=1e-5, atol=1e-6)
    assert report.accuracy == 1.0  # every label right on every image (exact match)


def test_the_document_records_the_task_and_round_trips(report: VerificationReport) -> None:
    doc = report.to_document()
    assert doc["task"] == "multilabel"
    assert "one verdict per label" in doc["text"]
    assert [c["class_name"] for c in doc["classes"]] == list(LABELS)
    back = VerificationReport.from_document(json.loads(json.dumps(doc)))
    assert back.task == "multilabel"
    assert back.classes == report.classes
    # a single-label document is unchanged: no task key at all
    single = VerificationReport.from_document({**doc, "task": "classification"})
    assert "task" not in single.to_document()


def test_the_html_report_shows_one_verdict_per_label(report: VerificationReport) -> None:
    from verification.report import render_report

    page = render_report(report)
    assert "nodule" in page
    assert "effusion" in page
    assert "SUITABLE" in page
    assert "CANNOT VERIFY" in page


def test_the_command_line_gives_one_verdict_per_label(bundle: Any, tmp_path: Path) -> None:
    """``python -m verification verify`` on a multi-label model: the CSV's labels ("a|b", "" for none), the
    lesion and lung folders, the JSON document with one verdict per label, exit code 4 (CANNOT VERIFY)."""
    from PIL import Image

    from verification.cli import main

    torch.set_num_threads(1)
    buf = io.BytesIO()
    torch.save(Detector().eval(), buf)
    (tmp_path / "det.pt").write_bytes(buf.getvalue())
    side = {"task": "multilabel", "class_names": list(LABELS), "input_size": SIZE, "mean": 0.5, "std": 0.25}
    (tmp_path / "det.json").write_text(json.dumps(side))
    bundle.save(tmp_path / "bundle" / "ref")
    x, sets, masks, lungs = world(22, 3, 12, seed=1)
    for sub in ("img", "les", "lung"):
        (tmp_path / sub).mkdir()
    rows = ["path,label"]
    for i in range(len(x)):
        pixels = np.clip(x[i, 0].numpy() * 0.25 + 0.5, 0, 1)
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(tmp_path / "img" / f"{i:02d}.png")
        Image.fromarray(lungs[i].astype(np.uint8) * 255).save(tmp_path / "lung" / f"{i:02d}_lung.png")
        if masks[i] is not None:
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(tmp_path / "les" / f"{i:02d}_lesion.png")
        rows.append(f"img/{i:02d}.png,{'|'.join(sets[i])}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "verify.json"
    code = main(
        [
            "verify", str(tmp_path / "det.pt"), str(tmp_path / "labels.csv"), "--labelled", "--trust",
            "--bundle", str(tmp_path / "bundle" / "ref"), "--annotations", str(tmp_path / "les"),
            "--anatomy", str(tmp_path / "lung"), "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 4
    doc = json.loads(out.read_text())
    assert doc["task"] == "multilabel"
    verdicts = {c["class_name"]: (c["verdict"], c["n_images"]) for c in doc["classes"]}
    assert verdicts == {"nodule": ("suitable", 22), "effusion": ("cannot_verify", 3)}


def test_a_broken_label_fails_alone(bundle: Any) -> None:
    """The effusion head fires on the nodule's bright disc: effusion fails E1 (a failing line decides however
    few its positives), while nodule, from the same model, keeps its own SUITABLE."""
    x, sets, masks, lungs = world(22, 3, 12, seed=1)
    broken = model(name="broken", effusion_sees="bright")
    got = verify(broken, bundle, x, sets, annotations=masks, anatomy=lungs)
    nodule, effusion = got.for_class("nodule"), got.for_class("effusion")
    assert nodule is not None
    assert effusion is not None
    assert nodule.verdict == "suitable", nodule.reason
    assert effusion.verdict == "unsuitable"
    assert effusion.deciding_line == "E1"
    assert got.verdict == "unsuitable"
    assert got.reason.startswith("effusion: E1 task performance failed")


def test_without_labels_or_findings_no_label_is_verified(bundle: Any) -> None:
    x, *_ = world(22, 3, 12, seed=1)
    got = verify(model(), bundle, x[:8])
    assert got.task == "multilabel"
    assert {c.verdict for c in got.classes} == {"cannot_verify"}
    assert any("labels" in m for m in got.missing)


def test_unknown_label_names_are_refused_by_name(bundle: Any) -> None:
    from verification.errors import InvalidInputError

    x, *_ = world(2, 0, 0, seed=1)
    with pytest.raises(InvalidInputError, match="'fracture' is not one of the model's labels"):
        verify(model(), bundle, x, [["nodule"], ["fracture"]])


def test_the_ray_engine_is_refused_for_multilabel_with_the_way_out() -> None:
    from argparse import Namespace

    from verification.cli import CliError
    from verification.cli.verify import _verify_labels

    with pytest.raises(CliError, match="--engine local"):
        _verify_labels(Namespace(engine="ray"), None, None, [], None)


def test_build_reference_of_a_multilabel_model_is_built_label_by_label() -> None:
    """The CLI's `reference build` and the dashboard's "Build from labelled images" call build_reference."""
    from verification.reference import build_reference

    x, sets, *_ = world(6, 4, 2, seed=3)
    got = build_reference(model(), x, ["|".join(s) for s in sets], layer="features", grid=(32, 32))
    want = build_label_reference(model(), x, sets, layer="features", grid=(32, 32))
    assert got.class_names == LABELS
    assert list(got.counts) == [6, 4]  # every positive is detected by the healthy detector
    np.testing.assert_allclose(got.references, want.references, atol=1e-6)


def test_a_single_label_calibration_never_judges_labels(bundle: Any) -> None:
    """Edges calibrated on softmax classes are refused for sigmoid labels: nothing calibrated can pass."""
    import dataclasses

    from verification.verdict.multilabel import SINGLE_LABEL_CALIBRATION

    single = dataclasses.replace(
        bundle, calibration=dataclasses.replace(bundle.calibration, scheme="healthy variation of 2 models")
    )
    x, sets, masks, lungs = world(22, 3, 12, seed=1)
    got = verify(model(), single, x, sets, annotations=masks, anatomy=lungs)
    assert SINGLE_LABEL_CALIBRATION in got.warnings
    nodule = got.for_class("nodule")
    assert nodule is not None
    assert nodule.verdict == "cannot_verify"  # E3 (required) has no edge to be judged against
    e3 = got.line("E3")
    assert e3 is not None
    assert e3.status == "not_assessable"


def test_a_label_with_too_many_images_not_assessable_is_cannot_verify() -> None:
    """E0's limit (``max_not_assessable``) holds label by label: every line of the label's binary run passing,
    but 30 of its 50 images removed by the input gate → CANNOT VERIFY (E0). Before the fix: SUITABLE."""
    from verification.verdict.lines import line_e0
    from verification.verdict.measure import Measurements
    from verification.verdict.multilabel import label_verdict
    from verification.verdict.records import ClassLine, LineResult

    names = ("nodule", "not nodule")
    lab = np.repeat([0, 1], 25)
    assessable = np.tile(np.arange(25) >= 15, 2)  # 10 of 25 of each side kept: 60 % gated
    m = Measurements(
        names=tuple(f"i{i}" for i in range(50)),
        class_names=names,
        model_classes=names,
        labels=lab,
        predicted=lab.copy(),
        probs=np.eye(2, dtype=np.float32)[lab],
        assessable=assessable,
        gate_reasons=tuple(None if a else "garbage class" for a in assessable),
        has_finding=(lab == 0) & assessable,
        values={},
        maps=np.zeros((50, 4, 4), np.float32),
        lesions=np.zeros((50, 4, 4), np.float32),
    )
    config = VerdictConfig(min_images=10)

    def passing(key: str) -> LineResult:
        return LineResult(key, key, "pass", True, tuple(ClassLine(c, "pass") for c in names))

    lines = [line_e0(m, config), *(passing(k) for k in ("E1", "E2", "E3", "E4"))]
    got = label_verdict(m, lines, config)
    assert (got.verdict, got.deciding_line) == ("cannot_verify", "E0"), got
    assert "30 of the run's 50 images" in got.reason
    assert "50 %" in got.reason
    within = Measurements(**{**m.__dict__, "assessable": np.ones(50, bool), "gate_reasons": (None,) * 50})
    assert label_verdict(within, [line_e0(within, config), *lines[1:]], config).verdict == "suitable"
