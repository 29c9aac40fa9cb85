"""The one overlay renderer against hand-derived pixels.

OpenCV's JET colour map sends 0 to BGR (128, 0, 0) (dark blue) and 255 to BGR (0, 0, 128) (dark red); the
blend is ``(1 − opacity) · image + opacity · colour``, rounded.
"""

from __future__ import annotations

import numpy as np
import pytest

from verification import render

JET_LOW_RGB = (0, 0, 128)
JET_HIGH_RGB = (128, 0, 0)


def test_jet_ends_are_the_documented_colours() -> None:
    pic = render.colorize(np.array([[0.0, 1.0]], np.float32), "jet")
    assert tuple(pic[0, 0]) == JET_LOW_RGB
    assert tuple(pic[0, 1]) == JET_HIGH_RGB


def test_blend_is_the_weighted_mean_rounded() -> None:
    image = np.full((4, 6), 100, np.uint8)
    out = render.overlay(image, np.zeros((2, 3), np.float32), opacity=0.5)
    assert out.shape == (4, 6, 3)
    # 0.5·100 + 0.5·(0, 0, 128) = (50, 50, 114)
    assert {tuple(p) for p in out.reshape(-1, 3)} == {(50, 50, 114)}
    hot = render.overlay(image, np.ones((2, 3), np.float32), opacity=0.25)
    # 0.75·100 + 0.25·(128, 0, 0) = (107, 75, 75)
    assert {tuple(p) for p in hot.reshape(-1, 3)} == {(107, 75, 75)}


def test_opacity_zero_is_the_image_and_one_is_the_colour() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    cam = rng.random((8, 8)).astype(np.float32)
    np.testing.assert_array_equal(render.overlay(image, cam, opacity=0.0), image)
    np.testing.assert_array_equal(render.overlay(image, cam, opacity=1.0), render.colorize(cam, "jet"))


def test_large_pictures_are_shrunk_to_max_side_and_nan_is_zero() -> None:
    image = np.zeros((300, 150), np.uint8)
    cam = np.full((7, 7), np.nan, np.float32)
    out = render.overlay(image, cam, opacity=1.0, max_side=100)
    assert out.shape == (100, 50, 3)
    assert {tuple(p) for p in out.reshape(-1, 3)} == {JET_LOW_RGB}


def test_mask_overlay_tints_only_the_mask() -> None:
    image = np.full((10, 10), 200, np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    out = render.mask_overlay(image, mask, color=(0, 0, 0))
    assert tuple(out[0, 0]) == (200, 200, 200)
    assert tuple(out[5, 5]) == (120, 120, 120)  # 0.6 · 200 + 0.4 · 0 inside, away from the outline


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        render.overlay(np.zeros((4, 4), np.float32), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="colour map"):
        render.colorize(np.zeros((2, 2)), "rainbow")
