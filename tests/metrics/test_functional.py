"""Metrics against scipy / scikit-image and hand-derived cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import cosine as scipy_cosine_distance
from scipy.stats import entropy, pearsonr, wasserstein_distance
from skimage.filters import threshold_otsu
from skimage.metrics import structural_similarity

from verification.errors import ShapeError
from verification.metrics import (
    binarize,
    cosine,
    dice,
    energy_in_mask,
    iou,
    kl_divergence,
    normalize_maps,
    otsu_thresholds,
    pearson,
    pointing_game,
    prepare,
    ssim,
    threshold_curve,
    wasserstein_values,
)


def smooth_maps(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Attention-like maps: smoothed noise, min-max normalised to [0, 1], float64."""
    rng = np.random.default_rng(seed)
    raw = np.stack([gaussian_filter(rng.random((h, w)), 2.0) for _ in range(n)])
    lo = raw.min(axis=(1, 2), keepdims=True)
    hi = raw.max(axis=(1, 2), keepdims=True)
    return (raw - lo) / (hi - lo)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


A = smooth_maps(6, 24, 20, seed=1)
B = smooth_maps(6, 24, 20, seed=2)


def test_prepare_resizes_normalises_and_broadcasts() -> None:
    a, b = prepare(np.full((3, 10, 10), 7.0), np.arange(16.0).reshape(4, 4), size=(8, 8))
    assert a.shape == (3, 8, 8)
    assert b.shape == (1, 8, 8)
    assert float(a.abs().max()) == 0.0  # a constant map normalises to zeros, never divided by zero
    assert float(b.min()) == 0.0
    assert float(b.max()) == 1.0
    with pytest.raises(ShapeError):
        prepare(np.zeros((3, 8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ShapeError):
        prepare(np.zeros((2, 3, 8, 8)), np.zeros((8, 8)))


def test_normalize_maps_min_max() -> None:
    x = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]])
    assert torch.allclose(normalize_maps(x), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))


def test_iou_dice_hand_case() -> None:
    # A has 4 foreground pixels, B has 6, they share 2: IoU = 2 / 8, Dice = 4 / 10.
    a = torch.zeros(1, 4, 4)
    b = torch.zeros(1, 4, 4)
    a[0, 0, :4] = 1.0
    b[0, 0, 2:4] = 1.0
    b[0, 1, :4] = 1.0
    assert iou(a, b).values[0] == pytest.approx(0.25, abs=1e-12)
    assert dice(a, b).values[0] == pytest.approx(0.4, abs=1e-12)
    # Foreground is value > threshold: 0.5 itself is background.
    assert not bool(binarize(torch.tensor([[[0.5]]]), 0.5).any())


def test_iou_dice_empty_cases() -> None:
    z = torch.zeros(1, 5, 5)
    o = torch.ones(1, 5, 5)
    assert iou(z, z).values[0] == 1.0
    assert dice(z, z).values[0] == 1.0
    assert iou(z, o).values[0] == 0.0
    assert dice(o, z).values[0] == 0.0
    assert iou(z, z, "otsu").values[0] == 1.0


def test_otsu_matches_skimage() -> None:
    rng = np.random.default_rng(3)
    maps = np.concatenate([A, rng.random((4, 24, 20)) ** 3])
    ours = otsu_thresholds(t(maps)).numpy()
    ref = np.array([threshold_otsu(m) for m in maps])
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert float(otsu_thresholds(torch.full((1, 4, 4), 0.3, dtype=torch.float64))[0]) == pytest.approx(0.3)


def test_iou_with_otsu_matches_per_pair_skimage() -> None:
    ours = iou(t(A), t(B), "otsu").values
    expected = []
    for x, y in zip(A, B):
        fx, fy = x > threshold_otsu(x), y > threshold_otsu(y)
        expected.append((fx & fy).sum() / (fx | fy).sum())
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_threshold_curve() -> None:
    curve = threshold_curve(t(A), t(B), "dice", thresholds=[0.2, 0.5, 0.8])
    assert curve.values.shape == (6, 3)
    np.testing.assert_allclose(curve.values[:, 1], dice(t(A), t(B), 0.5).values)
    # Trapezoid by hand, normalised by the span 0.6.
    v = curve.values
    np.testing.assert_allclose(
        curve.auc, (0.3 * (v[:, 0] + v[:, 1]) / 2 + 0.3 * (v[:, 1] + v[:, 2]) / 2) / 0.6
    )
    same = threshold_curve(t(A), t(A))
    np.testing.assert_allclose(same.auc, 1.0)


@pytest.mark.parametrize("shape", [(24, 20), (11, 11), (37, 64)])
def test_ssim_matches_skimage(shape: tuple[int, int]) -> None:
    a = smooth_maps(4, *shape, seed=4)
    b = smooth_maps(4, *shape, seed=5)
    ours = ssim(t(a), t(b)).values
    ref = [
        structural_similarity(
            x,
            y,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            K1=0.01,
            K2=0.03,
        )
        for x, y in zip(a, b)
    ]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    # float32 maps (the production dtype) agree as well.
    ours32 = ssim(t(a.astype(np.float32)), t(b.astype(np.float32))).values
    np.testing.assert_allclose(ours32, ref, atol=1e-4)


def test_ssim_n_vs_one_broadcasts() -> None:
    one = ssim(t(A), t(B[:1])).values
    rep = ssim(t(A), t(np.repeat(B[:1], len(A), axis=0))).values
    np.testing.assert_allclose(one, rep, atol=1e-12)


def test_ssim_rejects_maps_smaller_than_window() -> None:
    with pytest.raises(ShapeError):
        ssim(torch.zeros(1, 10, 30), torch.zeros(1, 10, 30))


def test_cosine_matches_scipy_and_zero_map_is_nan() -> None:
    ours = cosine(t(A), t(B)).values
    np.testing.assert_allclose(
        ours, [1 - scipy_cosine_distance(x.ravel(), y.ravel()) for x, y in zip(A, B)], atol=1e-6
    )
    res = cosine(torch.zeros(2, 4, 4, dtype=torch.float64), t(A[:2, :4, :4]))
    assert np.isnan(res.values).all()
    assert res.reasons == {0: "map is all zeros", 1: "map is all zeros"}


def test_cosine_block_sums_of_prepared_maps_agree_with_float64() -> None:
    """Within compute_metrics' chunks, float32 prepared maps are summed in float32 blocks (kernels.cosine_rows
    with unit=True): within 5e-8 of scipy in float64 on the same prepared maps; float64 sums (any other
    caller) within 1e-12; maps of no known range (direct calls) keep float64 sums, so a map of values around
    1e-25 (squares below float32's range) is not taken for all zeros."""
    from verification.metrics import compute_metrics
    from verification.metrics.functional import shared_work

    maps, refs = smooth_maps(6, 300, 200, seed=3), smooth_maps(6, 300, 200, seed=4)
    a32, b32 = prepare(maps.astype(np.float32), refs.astype(np.float32), None)
    want = [1 - scipy_cosine_distance(x.ravel(), y.ravel()) for x, y in zip(a32.double(), b32.double())]
    got = compute_metrics(maps.astype(np.float32), refs.astype(np.float32), ["cosine"], size=None)["cosine"]
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-8)
    with shared_work():  # the same maps, prepared in a block: the block sums, bit for bit
        pa, pb = prepare(maps.astype(np.float32), refs.astype(np.float32), None)
        np.testing.assert_array_equal(cosine(pa, pb).values, got)
    np.testing.assert_allclose(cosine(a32, b32).values, want, rtol=0, atol=1e-12)  # float64 sums
    tiny = cosine(t(A[:2].astype(np.float32) * 1e-25), t(B[:2].astype(np.float32)))
    assert not tiny.reasons
    np.testing.assert_allclose(tiny.values, cosine(t(A[:2]), t(B[:2])).values, rtol=1e-6)


def test_pearson_matches_scipy_and_constant_map_is_nan() -> None:
    ours = pearson(t(A), t(B)).values
    np.testing.assert_allclose(
        ours, [pearsonr(x.ravel(), y.ravel()).statistic for x, y in zip(A, B)], atol=1e-6
    )
    mixed = np.stack([A[0], np.full_like(A[0], 0.3)])
    res = pearson(t(B[:2]), t(mixed))
    assert not np.isnan(res.values[0])
    assert np.isnan(res.values[1])
    assert res.reasons == {1: "reference is constant"}


def test_kl_matches_scipy_entropy() -> None:
    ours = kl_divergence(t(A), t(B)).values
    ref = [entropy(y.ravel() + 1e-8, x.ravel() + 1e-8) for x, y in zip(A, B)]  # KL(P_ref || Q_map)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert kl_divergence(t(A), t(A)).values == pytest.approx(np.zeros(len(A)), abs=1e-12)
    # Direction matters: KL(ref || map) != KL(map || ref) in general.
    assert not np.allclose(ours, kl_divergence(t(B), t(A)).values)


def test_wasserstein_values_matches_scipy() -> None:
    ours = wasserstein_values(t(A), t(B)).values
    np.testing.assert_allclose(
        ours, [wasserstein_distance(x.ravel(), y.ravel()) for x, y in zip(A, B)], atol=1e-6
    )


def test_identical_maps() -> None:
    a = t(A)
    assert iou(a, a).values == pytest.approx(1.0)
    assert dice(a, a, "otsu").values == pytest.approx(1.0)
    assert ssim(a, a).values == pytest.approx(1.0, abs=1e-9)
    assert cosine(a, a).values == pytest.approx(1.0)
    assert pearson(a, a).values == pytest.approx(1.0)
    assert wasserstein_values(a, a).values == pytest.approx(0.0)


def test_pointing_game_hand_case() -> None:
    maps = torch.zeros(3, 9, 9)
    maps[0, 2, 2] = 1.0  # inside
    maps[1, 7, 7] = 1.0  # outside; the nearest mask pixel (4, 4) is √18 ≈ 4.24 px away
    maps[2, 2, 2] = 1.0  # empty mask below
    masks = torch.zeros(3, 9, 9)
    masks[:2, 1:5, 1:5] = 1.0
    res = pointing_game(maps, masks)
    assert res.values[:2].tolist() == [1.0, 0.0]
    assert np.isnan(res.values[2])
    assert res.reasons == {2: "annotation mask is empty"}
    assert pointing_game(maps[1:2], masks[1:2], tolerance=4).values[0] == 0.0
    assert pointing_game(maps[1:2], masks[1:2], tolerance=5).values[0] == 1.0


def test_energy_in_mask_hand_case() -> None:
    m = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert energy_in_mask(m, mask).values[0] == pytest.approx(5 / 8)
    res = energy_in_mask(torch.zeros(1, 2, 2), mask)
    assert np.isnan(res.values[0])
    assert res.reasons == {0: "map is all zeros"}


def test_results_are_float64_numpy() -> None:
    res = ssim(t(A.astype(np.float32)), t(B.astype(np.float32)))
    assert isinstance(res.values, np.ndarray)
    assert res.values.dtype == np.float64
    assert math.isfinite(float(res.values.sum()))


def test_native_224_float32_matches_peers_through_compute_metrics() -> None:
    """The production path at native 224×224 (float32, chunked, IoU/Dice sharing their counts, the native
    normalisation) against scipy / scikit-image per pair, also with one reference for all maps."""
    from verification.metrics import compute_metrics

    rng = np.random.default_rng(11)
    raw_a = np.stack([gaussian_filter(rng.random((224, 224)), 6.0) for _ in range(3)]).astype(np.float32)
    raw_b = np.stack([gaussian_filter(rng.random((224, 224)), 4.0) for _ in range(3)]).astype(np.float32)
    for refs in (raw_b, raw_b[:1]):
        got = compute_metrics(raw_a, refs, size=None)
        for i in range(3):
            x = raw_a[i].astype(np.float64)
            y = refs[min(i, len(refs) - 1)].astype(np.float64)
            x, y = (x - x.min()) / (x.max() - x.min()), (y - y.min()) / (y.max() - y.min())
            fx, fy = x > 0.5, y > 0.5
            assert got["iou"][i] == pytest.approx((fx & fy).sum() / (fx | fy).sum(), abs=1e-12)
            assert got["dice"][i] == pytest.approx(2 * (fx & fy).sum() / (fx.sum() + fy.sum()), abs=1e-12)
            kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}
            assert got["ssim"][i] == pytest.approx(structural_similarity(x, y, **kw), abs=1e-5)
            cos = 1 - scipy_cosine_distance(x.ravel(), y.ravel())
            assert got["cosine"][i] == pytest.approx(cos, abs=1e-6)
            assert got["pearson"][i] == pytest.approx(pearsonr(x.ravel(), y.ravel()).statistic, abs=1e-6)
            assert got["kl"][i] == pytest.approx(entropy(y.ravel() + 1e-8, x.ravel() + 1e-8), rel=1e-5)


def test_iou_dice_shared_counts_equal_separate_calls() -> None:
    from verification.metrics import compute_metrics

    for thr in (0.3, "otsu"):
        got = compute_metrics(A, B, ["iou", "dice"], threshold=thr, size=None)
        np.testing.assert_array_equal(got["iou"], iou(t(A), t(B), thr).values)
        np.testing.assert_array_equal(got["dice"], dice(t(A), t(B), thr).values)


def test_values_do_not_depend_on_the_batch() -> None:
    """A pair's value is the same alone and inside a batch (row-wise kernels, no batch-dependent blocking)."""
    a32, b32 = t(A.astype(np.float32)), t(B.astype(np.float32))
    for fn in (cosine, pearson, kl_divergence, ssim):
        whole = fn(a32, b32).values
        alone = np.array([fn(a32[i : i + 1], b32[i : i + 1]).values[0] for i in range(len(A))])
        np.testing.assert_array_equal(whole, alone, err_msg=fn.__name__)


def test_parallel_chunks_equal_one_thread() -> None:
    """compute_metrics runs its chunks on worker threads when torch has more than one: same values."""
    from verification.metrics import compute_metrics
    from verification.metrics.registry import chunk_rows

    rng = np.random.default_rng(5)
    maps = rng.random((40, 224, 224)).astype(np.float32)  # 20 pairs a chunk at 224²: two chunks
    refs = rng.random((1, 224, 224)).astype(np.float32)
    assert len(maps) > chunk_rows((224, 224), 4)  # more than one chunk, or nothing runs in parallel
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = compute_metrics(maps, refs, size=None)
        torch.set_num_threads(2)
        parallel = compute_metrics(maps, refs, size=None)
    finally:
        torch.set_num_threads(before)
    for name, values in serial.items():
        np.testing.assert_array_equal(parallel[name], values, err_msg=name)


def test_one_map_against_n_references_equals_repeating_it() -> None:
    """The compiled kernels broadcast either side: one map against N references equals N copies of it."""
    one, refs = t(A[:1].astype(np.float32)), t(B.astype(np.float32))
    rep = t(np.repeat(A[:1], len(B), axis=0).astype(np.float32))
    for fn in (cosine, pearson, kl_divergence, ssim, iou, dice):
        np.testing.assert_array_equal(fn(one, refs).values, fn(rep, refs).values, err_msg=fn.__name__)
    np.testing.assert_array_equal(iou(one, refs, "otsu").values, iou(rep, refs, "otsu").values)
