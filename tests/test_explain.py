"""The per-image sentence (verification.verdict.explain): each branch on hand-built records, each location
on hand-built maps whose peak, centre of mass and outside share are derived by hand."""

from __future__ import annotations

import numpy as np
import pytest

from verification.verdict import ClassLine, LineResult, VerificationReport
from verification.verdict.explain import (
    Explanation,
    Threshold,
    explain_image,
    locate,
    region_words,
    thresholds,
)
from verification.verdict.records import ImageEvidence


def _im(**kw: object) -> ImageEvidence:
    base: dict[str, object] = dict(
        name="a.png",
        label="nodule",
        predicted="nodule",
        probabilities=(0.1, 0.9),
        assessable=True,
        values={},
    )
    base.update(kw)
    return ImageEvidence(**base)  # type: ignore[arg-type]


# limits of healthy models on nodule images: E3's drops at most 20 points / 50 %, E4's drop at least 60 points
_E3 = {
    ("nodule", "E3.outside_drop"): Threshold(0.2, False),
    ("nodule", "E3.inside_survival"): Threshold(0.5, False),
}
_E4 = {("nodule", "E4.finding_drop"): Threshold(0.6, True)}


def _explained_in_lungs(
    peak: tuple[int, int],
    lungs: tuple[slice, slice],
    values: dict[str, float],
    limits: dict[tuple[str, str], Threshold],
) -> Explanation:
    """The sentence for a nodule image whose 9×9 map is one peak at ``peak``, the lungs the box ``lungs``."""
    cam = np.zeros((9, 9))
    cam[peak] = 1.0
    mask = np.zeros((9, 9), bool)
    mask[lungs] = True
    return explain_image(_im(values=values), location=locate(cam, mask), limits=limits, anatomy="the lungs")


# ---------------------------------------------------------------------------------------------- locate


def test_region_words_cover_the_grid() -> None:
    assert region_words(0.1, 0.1) == "in the upper-left corner"
    assert region_words(0.5, 0.1) == "at the top centre"
    assert region_words(0.9, 0.1) == "in the upper-right corner"
    assert region_words(0.1, 0.5) == "on the left side"
    assert region_words(0.5, 0.5) == "in the centre"
    assert region_words(0.9, 0.5) == "on the right side"
    assert region_words(0.1, 0.9) == "in the lower-left corner"
    assert region_words(0.5, 0.9) == "at the bottom centre"
    assert region_words(1.0, 1.0) == "in the lower-right corner"  # the edge belongs to the last cell


def test_locate_peak_centre_and_outside_share_by_hand() -> None:
    cam = np.zeros((10, 10), np.float32)
    cam[1, 1] = 3.0  # peak, upper-left
    cam[8, 8] = 1.0
    # centre of mass: x = (3·1.5 + 1·8.5) / 4 / 10 = 0.325; same for y
    anatomy = np.zeros((20, 20), bool)
    anatomy[10:, 10:] = True  # at 10×10: rows/cols 5..9 → holds (8, 8) only
    loc = locate(cam, anatomy)
    assert loc is not None
    assert loc.peak == pytest.approx((0.15, 0.15))
    assert loc.centre == pytest.approx((0.325, 0.325))
    assert loc.region == "in the upper-left corner"
    assert loc.outside_share == pytest.approx(0.75)
    assert loc.peak_inside is False
    inside = locate(cam, ~anatomy)
    assert inside is not None
    assert inside.peak_inside is True
    assert inside.outside_share == pytest.approx(0.25)


def test_locate_without_anatomy_or_signal() -> None:
    cam = np.zeros((4, 4))
    assert locate(cam) is None  # nothing to locate
    cam[2, 3] = 1.0
    loc = locate(cam)
    assert loc is not None
    assert loc.outside_share is None
    assert loc.peak_inside is None
    assert locate(cam, np.zeros((4, 4), bool)) == loc  # an empty mask says nothing about inside/outside
    assert locate(np.full((4, 4), np.nan)) is None


# ---------------------------------------------------------------------------------------------- thresholds


def test_thresholds_read_the_lead_sub_measure_of_e3() -> None:
    e3 = LineResult(
        "E3",
        "reliance",
        "fail",
        True,
        (
            ClassLine(
                "normal",
                "fail",
                value=0.8,
                threshold=0.2,
                higher_is_better=False,
                numbers={"E3.outside_drop": 0.8, "E3.inside_survival": 0.1, "E3.outside_energy": 0.6},
            ),
            ClassLine(
                "effusion",
                "fail",
                value=0.99,
                threshold=0.77,
                higher_is_better=False,
                numbers={"E3.outside_drop": 0.05, "E3.inside_survival": 0.99},
            ),
            ClassLine("nodule", "not_assessable"),
        ),
    )
    e4 = LineResult("E4", "cf", "pass", True, (ClassLine("nodule", "pass", value=0.9, threshold=0.6),))
    report = VerificationReport(
        verdict="unsuitable",
        deciding_line="E3",
        reason="",
        class_names=("normal", "nodule", "effusion"),
        classes=(),
        lines=(e3, e4),
        images=(),
        accuracy=None,
        n_images=0,
        n_not_assessable=0,
    )
    got = thresholds(report)
    assert got == {
        ("normal", "E3.outside_drop"): Threshold(0.2, False),
        ("effusion", "E3.inside_survival"): Threshold(0.77, False),
        ("nodule", "E4.finding_drop"): Threshold(0.6, True),
    }


# ---------------------------------------------------------------------------------------------- sentences


def test_not_assessable_says_why_and_nothing_else() -> None:
    ex = explain_image(
        _im(assessable=False, not_assessable_reason="early feature maps shifted (score 5 > 3)"),
        location=locate(np.eye(4)),
    )
    assert ex.sentence == (
        "Not assessed: early feature maps shifted (score 5 > 3); the model's prediction and heatmap on this "
        "image are not evidence."
    )
    assert ex.numbers == {"not assessable": "early feature maps shifted (score 5 > 3)"}


def test_shortcut_outside_the_anatomy() -> None:
    ex = _explained_in_lungs(
        (0, 0),  # the token in the upper-left corner
        np.s_[3:8, 2:7],
        {"E3.outside_drop": 0.57, "E3.inside_survival": 0.99, "E3.outside_energy": 0.95},
        _E3,
    )
    assert ex.sentence == (
        "Predicted nodule (90 %), as labelled; attention peaks outside the lungs, in the upper-left corner "
        "of the image; 100 % of its energy lies outside the lungs; the prediction changes when everything "
        "outside the lungs is removed (57 points; healthy models ≤ 20); the prediction survives the removal "
        "of the lungs (99 % kept; healthy models ≤ 50 %)."
    )
    # the map's own share (1.0) is used, not the record's 0.95: the sentence describes the map it locates
    assert ex.numbers["share of attention outside the lungs"] == 1.0
    assert ex.numbers["E3 threshold (outside removed)"] == 0.2


def test_sound_image_inside_the_anatomy_with_its_finding() -> None:
    ex = _explained_in_lungs(
        (4, 7),
        np.s_[2:7, 5:9],
        {"E3.outside_drop": 0.01, "E3.inside_survival": 0.0, "E4.finding_drop": 0.97},
        {**_E3, **_E4},
    )
    assert ex.sentence == (
        "Predicted nodule (90 %), as labelled; attention peaks inside the lungs, on the right side of the "
        "image; 0 % of its energy lies outside the lungs; removing everything outside the lungs leaves the "
        "prediction in place (1 point; healthy models ≤ 20); removing the annotated finding lowers it by 97 "
        "points (healthy models ≥ 60)."
    )
    # inside_survival within its edge: not mentioned, and not among the numbers
    assert not any("kept" in k for k in ex.numbers)


def test_finding_that_does_not_matter_and_a_wrong_label() -> None:
    im = _im(label="nodule", predicted="effusion", values={"E4.finding_drop": 0.02})
    ex = explain_image(im, limits=_E4)
    assert ex.sentence == (
        "Predicted effusion (90 %), but labelled nodule; removing the annotated finding barely moves it "
        "(2 points; healthy models ≥ 60), so the prediction does not rest on the finding."
    )


def test_numbers_without_thresholds_are_stated_not_judged() -> None:
    cam = np.zeros((3, 3))
    cam[2, 1] = 1
    im = _im(
        label=None,
        values={
            "E3.outside_drop": 0.4,
            "E3.inside_survival": 0.9,
            "E4.finding_drop": 0.3,
            "E3.outside_energy": 0.25,
        },
    )
    ex = explain_image(im, location=locate(cam))
    assert ex.sentence == (
        "Predicted nodule (90 %); attention peaks at the bottom centre of the image; 25 % of its energy lies "
        "outside the anatomy; removing everything outside the anatomy changes the prediction by 40 points; "
        "removing the annotated finding changes its probability by 30 points."
    )
    for word in ("healthy", "survives", "barely", "leaves"):
        assert word not in ex.sentence


def test_nothing_measured() -> None:
    ex = explain_image(_im(predicted=None, probabilities=()))
    assert ex.sentence == "Assessed; no per-image number was measured on this image."


def test_the_healthy_band_is_the_healthy_models_class_means() -> None:
    from verification.verdict.calibration import Edge
    from verification.verdict.lines import _healthy_band

    edge = Edge("E3.outside_drop", "nodule", 0.2, True, 0.9, 0.1, 0.02, healthy=(0.05, 0.1, float("nan")))
    assert _healthy_band(edge) == {"healthy_low": 0.05, "healthy_high": 0.1}
    assert _healthy_band(Edge("E4.finding_drop", "nodule", None, False, None, None, None)) == {}


def test_a_spread_map_names_its_centre_of_mass_too() -> None:
    cam = np.zeros((9, 9))
    cam[0, 0] = 1.0  # the peak, upper-left
    cam[4, 3:6] = 0.9  # most weight in the centre: centre of mass (12.65, 12.65) / 3.7 / 9 ≈ (0.38, 0.38)
    loc = locate(cam)
    assert loc is not None
    assert loc.region == "in the upper-left corner"
    assert region_words(*loc.centre) == "in the centre"
    ex = explain_image(_im(label=None), location=loc)
    assert ex.sentence == (
        "Predicted nodule (90 %); attention peaks in the upper-left corner of the image, with its centre of "
        "mass in the centre."
    )
    assert ex.numbers["attention centre of mass (x, y)"] == f"{loc.centre[0]:.2f}, {loc.centre[1]:.2f}"
