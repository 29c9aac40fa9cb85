"""Counterfactual edits: kept pixels byte-identical, no value outside the image's range, fills by hand."""

from __future__ import annotations

import numpy as np
import pytest

from verification.counterfactual import (
    dilate_mask,
    masked_blur,
    neutralise_inside,
    neutralise_outside,
    remove_finding,
)
from verification.errors import ShapeError


def _phantom(size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy float image, a central square region, and a bright 'marker' block in the top-left corner."""
    rng = np.random.default_rng(0)
    img = (0.3 + 0.1 * rng.random((size, size))).astype(np.float32)
    roi = np.zeros((size, size), bool)
    roi[16:48, 16:48] = True
    img[roi] = 0.5 + 0.1 * rng.random(int(roi.sum())).astype(np.float32)
    img[2:10, 2:10] = 0.95  # the marker
    img[4:8, 4:6] = 0.05  # its letter
    return img, roi, rng.random((size, size)) < 0.5


@pytest.mark.parametrize("layout", ["hw", "chw", "hwc", "uint8"])
def test_neutralise_outside_keeps_the_anatomy_byte_identical(layout: str) -> None:
    img, roi, _ = _phantom()
    if layout == "chw":
        img = np.stack([img, img * 0.5, img * 0.25])
    elif layout == "hwc":
        img = np.stack([img, img * 0.5, img * 0.25], axis=-1)
    elif layout == "uint8":
        img = np.round(img * 255).astype(np.uint8)
    out = neutralise_outside(img, roi)
    assert out.shape == img.shape
    assert out.dtype == img.dtype
    inside = (slice(None), roi) if layout == "chw" else roi
    assert out[inside].tobytes() == img[inside].tobytes()
    assert not np.array_equal(out, img)  # the outside did change


def test_neutralise_outside_removes_the_marker_and_adds_no_value() -> None:
    img, roi, _ = _phantom()
    out = neutralise_outside(img, roi)
    outside = ~roi
    assert out[outside].min() >= img[outside].min()
    assert out[outside].max() <= img[outside].max()
    # median window 0.2 x 64 -> 13 px (169 px): the 8 x 8 = 64 px marker is under half of any window, so every
    # value there is a background value in [0.3, 0.4] (give or take one of 256 levels of the outside's range
    # 0.05-0.95, 0.0035); its bright box and dark letter are gone.
    step = 0.9 / 255
    assert out[2:10, 2:10].max() <= 0.4 + step
    assert out[2:10, 2:10].min() >= 0.3 - step


def test_neutralise_outside_median_filter_keeps_large_edges_blur_smears_them() -> None:
    img = np.full((64, 64), 0.2, np.float32)
    img[:, 32:] = 0.8  # a large structure outside: a step at column 32
    roi = np.zeros((64, 64), bool)
    roi[24:40, 8:20] = True
    out = neutralise_outside(img, roi)
    assert np.array_equal(out[:, 31] <= 0.2 + 1e-6, np.ones(64, bool))
    assert np.allclose(out[:, 32], 0.8, atol=1e-6)
    blurred = neutralise_outside(img, roi, fill="blur")
    assert 0.3 < blurred[0, 31] < 0.5  # the blur halves the step at the edge


def test_neutralise_outside_blur_spreads_the_marker() -> None:
    img, roi, _ = _phantom()
    out = neutralise_outside(img, roi, fill="blur")
    assert out[~roi].min() >= img[~roi].min()
    assert out[~roi].max() <= img[~roi].max()
    # marker 0.95 on a 0.3-0.4 background: a blur of sigma 0.08 * 64 = 5.1 px spreads its 64 px over ~2 pi
    # sigma^2 = 165 px, so its peak falls to at most 0.35 + 0.6 * 64 / 165 ≈ 0.6, and its dark letter is gone.
    assert out[2:10, 2:10].max() < 0.65
    assert out[4:8, 4:6].min() > 0.3


def test_neutralise_outside_constant_fill_is_the_outside_median() -> None:
    img, roi, _ = _phantom()
    out = neutralise_outside(img, roi, fill="median")
    assert np.allclose(out[~roi], np.median(img[~roi].astype(np.float64)), atol=1e-6)


def test_neutralise_inside_keeps_the_outside_and_fills_with_the_region_median() -> None:
    img, roi, _ = _phantom()
    out = neutralise_inside(img, roi)
    assert out[~roi].tobytes() == img[~roi].tobytes()
    assert np.allclose(out[roi], np.median(img[roi].astype(np.float64)), atol=1e-6)
    blurred = neutralise_inside(img, roi, fill="blur")
    assert blurred[~roi].tobytes() == img[~roi].tobytes()
    assert img[roi].min() <= blurred[roi].min()
    assert blurred[roi].max() <= img[roi].max()
    assert blurred[roi].std() < 0.25 * img[roi].std()  # the region's own texture is averaged away


def test_large_images_are_filtered_on_a_working_copy_with_the_same_guarantees() -> None:
    # 640 px > WORK_SIDE (512): wide filters run on a shrunk copy; kept pixels, range and marker removal hold
    img, roi, _ = _phantom(64)
    big = np.kron(img, np.ones((10, 10), np.float32))
    big_roi = np.kron(roi, np.ones((10, 10), bool))
    for fill in ("median_filter", "blur"):
        out = neutralise_outside(big, big_roi, fill=fill)  # type: ignore[arg-type]
        assert out[big_roi].tobytes() == big[big_roi].tobytes()
        assert out[~big_roi].min() >= big[~big_roi].min()
        assert out[~big_roi].max() <= big[~big_roi].max()
        assert out[20:100, 20:100].max() < 0.65  # the marker (rows/cols 20-100 at this scale) is gone
    inside = neutralise_inside(big, big_roi, fill="blur")
    assert inside[~big_roi].tobytes() == big[~big_roi].tobytes()


def test_masked_blur_uses_only_valid_pixels() -> None:
    # a single valid pixel: every output value is that pixel's value (hand-derived: G*(x v) / G*v = x_valid)
    plane = np.random.default_rng(1).random((21, 21))
    valid = np.zeros((21, 21), bool)
    valid[10, 10] = True
    assert np.allclose(masked_blur(plane, valid, 3.0), plane[10, 10])
    # valid pixels all equal c: output c everywhere, whatever the invalid pixels hold
    plane2 = np.where(valid | (np.arange(21)[None, :] < 5), 0.25, 9.0)
    valid2 = plane2 == 0.25
    assert np.allclose(masked_blur(plane2, valid2, 4.0), 0.25)


def test_remove_finding_changes_only_the_dilated_mask_and_follows_a_ramp() -> None:
    size = 48
    ramp = np.tile(np.linspace(0.2, 0.6, size, dtype=np.float32), (size, 1))
    yy, xx = np.mgrid[0:size, 0:size]
    lesion = (yy - 24) ** 2 + (xx - 24) ** 2 <= 5**2
    img = ramp.copy()
    img[lesion] += 0.3
    out = remove_finding(img, lesion)
    grown = dilate_mask(lesion, max(round(0.015 * size), 1))
    assert out[~grown].tobytes() == img[~grown].tobytes()
    assert img.min() <= out.min()
    assert out.max() <= img.max()
    # Telea fills from the boundary by a distance-weighted first-order extrapolation: on a linear ramp each
    # filled value lies within the ramp's values over the hole's width (8 px of 0.4/47 per px = 0.07).
    err = np.abs(out[grown] - ramp[grown])
    assert err.max() < 0.07, err.max()
    # regression: OpenCV's float inpainting on [0, 1] values overshot to [-1, 2]
    assert err.mean() < 0.03


def test_remove_finding_on_a_demo_nodule_approaches_the_lesion_free_twin() -> None:
    from assets import demo_world as dw
    from assets.make_demo import case_rng, make_case

    case = make_case(1234, "test", 1)  # a nodule
    twin = dw.render_case(case_rng(1234, "test", 1), case.label, lesion_strength=0.0).image
    assert case.label == 1
    assert case.lesion_mask.any()
    img = case.image.astype(np.float32) / 255
    out = remove_finding(img, case.lesion_mask)
    grown = dilate_mask(case.lesion_mask, 3)
    truth = twin.astype(np.float32) / 255
    before = float(np.abs(img - truth)[grown].mean())
    after = float(np.abs(out - truth)[grown].mean())
    # bench/counterfactual.py on the 20 test nodules: 39.6 grey levels before, 8.7 after. The lung texture
    # (vessels, ribs, noise) cannot be recovered, so the tolerance is the lesion's error halved, and the
    # fill's mean must match the lesion-free lung to 0.04 (10 grey levels; the lesion adds ~0.15 on average).
    assert after < 0.5 * before, (before, after)
    assert abs(float(out[grown].mean()) - float(truth[grown].mean())) < 0.04


def test_remove_finding_from_sources_only() -> None:
    """Aerated lung 0.3 above, dense tissue 0.7 below, a bright finding 0.9 on the boundary (like an effusion
    at a lung base). Filled from the lung only, every filled pixel is 0.3 (Telea averages known pixels, all
    0.3); filled from both, the part near the tissue takes tissue values."""
    img = np.full((48, 48), 0.7, np.float32)
    lung = np.zeros((48, 48), bool)
    lung[4:30, 8:40] = True
    img[lung] = 0.3
    finding = np.zeros((48, 48), bool)
    finding[22:34, 14:34] = True
    img[finding] = 0.9
    plain = remove_finding(img, finding)
    from_lung = remove_finding(img, finding, sources=lung)
    grown = dilate_mask(finding, 1)
    assert from_lung[~grown].tobytes() == img[~grown].tobytes()
    assert np.allclose(from_lung[grown], 0.3, atol=1e-5)
    assert plain[grown].max() > 0.6  # the plain fill reaches into the tissue's values
    # sources nowhere near the finding: the fill still comes from them alone. The march crosses ~25 px of
    # unknown pixels and Telea's gradient term adds a small error on the way (measured 0.003; 0.005 allowed,
    # against 0.2 if any lung pixel leaked in)
    far = np.zeros((48, 48), bool)
    far[0:2, 0:2] = True
    assert np.allclose(remove_finding(img, finding, sources=far)[grown], img[0, 0], atol=0.005)


@pytest.mark.parametrize(
    ("func", "mask"),
    [
        (neutralise_outside, np.zeros((16, 16), bool)),
        (neutralise_outside, np.ones((16, 16), bool)),
        (neutralise_inside, np.zeros((16, 16), bool)),
        (neutralise_inside, np.zeros((8, 16), bool)),
        (remove_finding, np.zeros((16, 16), bool)),
    ],
)
def test_edits_refuse_masks_that_leave_nothing_to_do(func, mask) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ShapeError):
        func(np.zeros((16, 16), np.float32), mask)


def test_edits_refuse_non_finite_images() -> None:
    img = np.zeros((16, 16), np.float32)
    img[0, 0] = np.nan
    roi = np.zeros((16, 16), bool)
    roi[4:8, 4:8] = True
    with pytest.raises(ShapeError, match="NaN"):
        neutralise_outside(img, roi)
