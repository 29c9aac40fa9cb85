"""Hostile input to the metrics (issue #14, items 4 and 5): every bad argument a typed error with a short
message, raised before any large allocation; NaN/inf maps reported as such and never scored."""

from __future__ import annotations

import math
import re
import resource
import time
from typing import Any

import numpy as np
import pytest
import torch

from verification.errors import InputTooLargeError, InvalidInputError, ShapeError, VerificationError
from verification.metrics import (
    METRICS,
    compute_metrics,
    iou,
    pointing_game,
    prepare,
    registry,
    threshold_curve,
)
from verification.metrics.functional import NONFINITE_MAP, NONFINITE_REF

ALL = sorted(METRICS)


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def _raises(kind: type[VerificationError], maps: Any, refs: Any = None, **kwargs: Any) -> str:
    with pytest.raises(kind) as info:
        compute_metrics(maps, _rand(1, 16, 16) if refs is None else refs, **kwargs)
    message = str(info.value)
    assert 10 < len(message) <= 300, message
    return message


@pytest.mark.parametrize(
    ("maps", "match"),
    [
        (_rand(0, 16, 16), "empty"),
        (_rand(1, 0, 0), "no pixels"),
        (_rand(2, 16, 0), "no pixels"),
        (_rand(16), r"\(H, W\) or \(N, H, W\)"),
        (_rand(1, 1, 16, 16), r"\(H, W\) or \(N, H, W\)"),
        (_rand(3, 16, 16), "3 maps with 2 references"),
    ],
)
def test_shapes_are_typed_errors(maps: np.ndarray, match: str) -> None:
    refs = _rand(2, 16, 16) if maps.shape[:1] == (3,) else None
    assert re.search(match, _raises(ShapeError, maps, refs))


@pytest.mark.parametrize(
    "maps",
    [
        ["a", "b"],
        "a map",
        b"bytes",
        np.array([["a", "b"], ["c", "d"]]),
        np.array([[1, None]], dtype=object),
        {"maps": 1},
        None,
        _rand(1, 16, 16) + 1j,
        ["x" * 1_000_000],  # the message must not echo it
    ],
    ids=["list-of-str", "str", "bytes", "str-array", "object-array", "dict", "none", "complex", "long-str"],
)
def test_non_numbers_are_typed_errors(maps: Any) -> None:
    _raises(InvalidInputError, maps)


def test_empty_reference_batch_and_non_numeric_reference() -> None:
    _raises(ShapeError, _rand(2, 16, 16), _rand(0, 16, 16))
    _raises(InvalidInputError, _rand(2, 16, 16), "reference")


@pytest.mark.parametrize(
    ("size", "kind"),
    [
        ((100_000, 100_000), InputTooLargeError),
        ((8192, 2), InputTooLargeError),  # one side beyond MAX_GRID_SIDE (SSIM's filter matrix is side²)
        ((3000, 3000), InputTooLargeError),
        ((0, 0), InvalidInputError),
        ((-4, 16), InvalidInputError),
        ((16.5, 16), InvalidInputError),
        ((True, 16), InvalidInputError),
        ("64", InvalidInputError),
        ((64,), InvalidInputError),
        ((64, 64, 64), InvalidInputError),
        (range(10**12), InvalidInputError),
        (64, InvalidInputError),
    ],
)
def test_sizes_are_checked_before_allocating(size: Any, kind: type[VerificationError]) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    _raises(kind, _rand(2, 16, 16), size=size)
    assert time.perf_counter() - t0 < 1.0
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024, f"peak memory grew by {grown_kib / 1024:.0f} MiB"


def test_huge_input_maps_refused_without_copying() -> None:
    """A (1, 10⁵, 10⁵) map is refused by its shape: an expanded view of 4 bytes, so a copy would show."""
    huge = torch.zeros(1, 1, 1).expand(1, 100_000, 100_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputTooLargeError, match="too large"):
        compute_metrics(huge, _rand(1, 16, 16))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024


def test_numpy_and_torch_integer_sizes_accepted() -> None:
    size: Any = (np.int64(20), torch.tensor(20))
    a = compute_metrics(_rand(2, 16, 16), _rand(1, 16, 16), ["iou"], size=size)
    b = compute_metrics(_rand(2, 16, 16), _rand(1, 16, 16), ["iou"], size=(20, 20))
    np.testing.assert_array_equal(a["iou"], b["iou"])


@pytest.mark.parametrize("threshold", [2.0, -0.5, math.nan, math.inf, "half", True, None, [0.5], 1 + 0j])
def test_thresholds_outside_unit_interval_refused(threshold: Any) -> None:
    _raises(InvalidInputError, _rand(2, 16, 16), threshold=threshold)
    with pytest.raises(InvalidInputError):
        iou(torch.rand(1, 8, 8), torch.rand(1, 8, 8), threshold)
    with pytest.raises(InvalidInputError):  # also as a per-metric option
        compute_metrics(
            _rand(2, 16, 16), _rand(1, 16, 16), ["dice"], options={"dice": {"threshold": threshold}}
        )


def test_threshold_bounds_and_otsu_accepted() -> None:
    thresholds: list[Any] = [0, 0.0, 1, 1.0, np.float32(0.25), "otsu"]
    for t in thresholds:
        out = compute_metrics(_rand(2, 16, 16), _rand(1, 16, 16, seed=1), ["iou", "dice"], threshold=t)
        assert np.isfinite(out["iou"]).all()


@pytest.mark.parametrize(
    "thresholds", [[0.5], [0.2, 0.2], [0.5, 0.1], [0.0, 2.0], [0.0, math.nan], ["a", "b"], [[0.1, 0.2]]]
)
def test_threshold_curve_refuses_bad_thresholds(thresholds: Any) -> None:
    a, b = torch.rand(2, 8, 8), torch.rand(2, 8, 8)
    with pytest.raises(InvalidInputError):
        threshold_curve(a, b, thresholds=thresholds)
    with pytest.raises(InvalidInputError):
        threshold_curve(a, b, metric="ssim")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("names", "options"),
    [
        (["iou", "nope"], None),
        ("nope", None),
        ([3], None),
        (None, {"wasserstein": {"bogus": 1}}),
        (None, {"nope": {}}),
        (None, {"ssim": 1.5}),
        (None, {"wasserstein": {"n_directions": 10**9}}),
        (None, {"wasserstein": {"n_directions": 0}}),
        (None, {"wasserstein": {"grid": 10**6}}),
        (None, {"wasserstein": {"seed": -1}}),
        (None, {"ssim": {"sigma": 0.0}}),
        (None, {"ssim": {"sigma": math.nan}}),
        (None, {"ssim": {"data_range": -1.0}}),
        (None, {"kl": {"eps": math.inf}}),
        (None, "options"),
    ],
)
def test_names_and_options_are_typed_errors(names: Any, options: Any) -> None:
    t0 = time.perf_counter()
    _raises(InvalidInputError, _rand(2, 16, 16), names=names, options=options)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("normalize", [True, False])
def test_non_finite_map_is_not_scored_and_says_why(bad: float, normalize: bool) -> None:
    """One pixel of map 1 is NaN/±inf: pair 1 is NaN in every metric with the non-finite reason (not 'all
    zeros', not 'constant'); the other pairs are exactly what they are without it."""
    maps = _rand(3, 16, 16)
    maps[1, 3, 3] = bad
    refs = _rand(1, 16, 16, seed=1)
    if not normalize:
        maps[[0, 2]] = np.clip(maps[[0, 2]], 0, 1)
    got = compute_metrics(maps, refs, ALL, normalize=normalize, size=(16, 16))
    clean = compute_metrics(maps[[0, 2]], refs, ALL, normalize=normalize, size=(16, 16))
    for name in ALL:
        assert math.isnan(got[name][1]), name
        assert got.reasons[name][1] == NONFINITE_MAP, (name, got.reasons[name])
        np.testing.assert_array_equal(got[name][[0, 2]], clean[name], err_msg=name)
        assert set(got.reasons[name]) == {1} | {2 * i for i in clean.reasons[name]}


def test_non_finite_reference_marks_every_pair() -> None:
    refs = np.full((1, 16, 16), math.nan)
    got = compute_metrics(_rand(2, 16, 16), refs, ALL)
    for name in ALL:
        assert np.isnan(got[name]).all()
        assert got.reasons[name] == {0: NONFINITE_REF, 1: NONFINITE_REF}


def test_prepare_keeps_a_non_finite_map_non_finite() -> None:
    maps = _rand(2, 16, 16)
    maps[0, 0, 0] = math.inf
    a, _ = prepare(maps, _rand(1, 16, 16), (8, 8))
    assert torch.isnan(a[0]).all()
    assert torch.isfinite(a[1]).all()


def test_functional_metrics_flag_non_finite_rows() -> None:
    a = torch.rand(2, 8, 8)
    a[0, 1, 1] = math.nan
    b = torch.rand(1, 8, 8)
    res = iou(a, b)
    assert math.isnan(res.values[0])
    assert res.reasons == {0: NONFINITE_MAP}
    masks = torch.zeros(2, 8, 8)
    masks[:, 2, 2] = 1
    masks[1, 0, 0] = math.inf
    pg = pointing_game(torch.rand(2, 8, 8), masks)
    assert math.isnan(pg.values[1])
    assert "annotation mask" in pg.reasons[1]


def test_pointing_game_tolerance_bounded_and_checked() -> None:
    maps = torch.zeros(1, 8, 8)
    maps[0, 0, 0] = 1
    mask = torch.zeros(1, 8, 8)
    mask[0, 7, 7] = 1
    t0 = time.perf_counter()
    assert (
        pointing_game(maps, mask, tolerance=10**9).values[0] == 1.0
    )  # a disk past the diagonal: every pixel
    assert time.perf_counter() - t0 < 1.0
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InvalidInputError):
            pointing_game(maps, mask, tolerance=bad)  # type: ignore[arg-type]


def test_long_batches_run_in_chunks_with_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 3 rows (a tiny work budget) give the one-chunk values, and reasons at the right rows."""
    maps = _rand(10, 20, 20)
    maps[4] = 0.0  # constant: a reason at row 4
    maps[8, 0, 0] = math.nan
    refs = _rand(10, 20, 20, seed=1)
    whole = compute_metrics(maps, refs, ALL, size=(16, 16))
    monkeypatch.setattr(registry, "WORK_BYTES", 3 * 16 * 16 * 8 * registry._COPIES_PER_ROW)
    chunked = compute_metrics(maps, refs, ALL, size=(16, 16))
    for name in ALL:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-12, atol=1e-12, err_msg=name)
        assert chunked.reasons[name] == whole.reasons[name]
    assert whole.reasons["pearson"][4] == "map is constant"
    assert whole.reasons["pearson"][8] == NONFINITE_MAP


@pytest.mark.parametrize("threshold", [0.5, "otsu"])
@pytest.mark.parametrize("size", [(11, 33), (64, 64), (40, 12)])
def test_every_nan_carries_its_reason(threshold: Any, size: tuple[int, int]) -> None:
    """Zero, constant, non-finite and ordinary maps against the same kinds of references, every pairing:
    a value is NaN exactly where a reason is given, with Otsu too (it used to fail on a non-finite reference)
    and on grids that the sliced Wasserstein pools unevenly (33 columns: 0/0 in float32 gave a bare NaN)."""
    kinds = {
        "zero": np.zeros((9, 7), np.float32),
        "const": np.full((9, 7), 0.3, np.float32),
        "inf": np.where(np.eye(9, 7) > 0, np.inf, 0.2).astype(np.float32),
        "nan": np.where(np.eye(9, 7) > 0, np.nan, 0.2).astype(np.float32),
        "ok": _rand(9, 7).astype(np.float32),
    }
    names = list(kinds)
    maps = np.stack([kinds[a] for a in names for _ in names])
    refs = np.stack([kinds[b] for _ in names for b in names])
    got = compute_metrics(maps, refs, ALL, threshold=threshold, size=size)
    for name in ALL:
        assert set(np.flatnonzero(np.isnan(got[name]))) == set(got.reasons[name]), name
    ok = names.index("ok") * (len(names) + 1)  # the (ok, ok) pair is scored by every metric
    assert all(np.isfinite(got[name][ok]) for name in ALL)
