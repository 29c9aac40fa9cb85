"""The registry and the batched entry point."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from verification.errors import InvalidInputError
from verification.metrics import (
    DEFAULT_METRICS,
    DEFAULT_SIZE,
    METRICS,
    MetricSpec,
    compute_metrics,
    prepare,
    register_metric,
)
from verification.metrics.functional import iou


def _maps(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31
    c = rng.random((n, 2, 1, 1))
    return np.exp(-((xx - c[:, 0]) ** 2 + (yy - c[:, 1]) ** 2) / 0.02).astype(np.float32)


def test_registry_knows_direction_and_range() -> None:
    assert set(DEFAULT_METRICS) == {"iou", "dice", "ssim", "cosine", "pearson", "kl", "wasserstein"}
    for name in ("iou", "dice", "ssim", "cosine", "pearson"):
        assert METRICS[name].higher_is_better
    for name in ("kl", "wasserstein", "wasserstein_values"):
        assert not METRICS[name].higher_is_better
    assert METRICS["iou"].range == (0.0, 1.0)
    assert METRICS["kl"].range[1] == float("inf")
    assert "1-D" in METRICS["wasserstein_values"].label
    with pytest.raises(ValueError, match="already registered"):
        register_metric(MetricSpec("iou", "IoU", True, (0.0, 1.0), iou))


def test_compute_metrics_n_vs_one_equals_n_vs_n() -> None:
    maps, ref = _maps(5, 0), _maps(1, 1)[0]
    one = compute_metrics(maps, ref)
    many = compute_metrics(maps, np.repeat(ref[None], 5, axis=0))
    assert list(one) == list(DEFAULT_METRICS)
    for name in DEFAULT_METRICS:
        assert one[name].shape == (5,)
        np.testing.assert_allclose(one[name], many[name], atol=1e-6)
        lo, hi = METRICS[name].range
        assert np.all((one[name] >= lo - 1e-9) & (one[name] <= hi + 1e-9))


def test_compute_metrics_resizes_to_common_grid_and_reports_reasons() -> None:
    maps = _maps(3, 2)
    maps[1] = 0.0
    ref = np.kron(_maps(1, 3)[0], np.ones((2, 2)))  # 64×64 reference for 32×32 maps
    res = compute_metrics(maps, ref, ["pearson", "cosine", "iou"], size=None)
    assert np.isnan(res["pearson"][1])
    assert res.reasons["pearson"] == {1: "map is constant"}
    assert res.reasons["cosine"] == {1: "map is all zeros"}
    assert res["iou"][1] == 0.0
    # Same numbers as scipy on the grid compute_metrics used (maps' own 32×32; the reference shrunk to it).
    a, b = prepare(maps, ref, None)
    expected = pearsonr(a[0].numpy().ravel(), b[0].numpy().ravel()).statistic
    assert res["pearson"][0] == pytest.approx(expected, abs=1e-6)


def test_compute_metrics_threshold_and_options() -> None:
    maps, refs = _maps(4, 4), _maps(4, 5)
    maps = maps + 0.5 * np.roll(refs, 3, axis=2)  # overlapping, two-level maps: Otsu differs from 0.5
    otsu = compute_metrics(maps, refs, ["iou"], threshold="otsu")
    fixed = compute_metrics(maps, refs, ["iou"], threshold=0.3)
    a, b = prepare(maps, refs, DEFAULT_SIZE)
    np.testing.assert_allclose(otsu["iou"], iou(a, b, "otsu").values)
    np.testing.assert_allclose(fixed["iou"], iou(a, b, 0.3).values)
    assert not np.allclose(otsu["iou"], fixed["iou"])
    few = compute_metrics(maps, refs, ["wasserstein"], options={"wasserstein": {"grid": 16}})
    assert few["wasserstein"].shape == (4,)
    with pytest.raises(InvalidInputError, match="unknown metric"):
        compute_metrics(maps, refs, ["nope"])


def test_chunk_buffers_are_reused_without_changing_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """compute_metrics normalises every chunk into the same per-thread buffers: results equal a fresh call
    per chunk, and prepare(buffers=...) writes into the buffer it is given."""
    from verification.metrics import functional, registry

    maps, refs = _maps(7, 8), _maps(7, 9)
    monkeypatch.setattr(registry, "chunk_rows", lambda grid, itemsize: 3)  # chunks of 3, 3 and 1 pairs
    chunked = compute_metrics(maps, refs, size=None)
    for s in range(0, 7, 3):
        alone = compute_metrics(maps[s : s + 3], refs[s : s + 3], size=None)
        for name in DEFAULT_METRICS:
            np.testing.assert_array_equal(chunked[name][s : s + 3], alone[name], err_msg=name)
    buf = functional.scratch("test", (7, 32 * 32), np.float32)
    assert functional.scratch("test", (2, 32 * 32), np.float32).base is buf.base  # the same memory again
    a, _ = prepare(maps, refs, None, buffers=(buf, None))
    assert np.shares_memory(a.numpy(), buf)
    np.testing.assert_array_equal(a.numpy(), prepare(maps, refs, None)[0].numpy())
    big = functional.SCRATCH_MAX_BYTES // 4 + 1
    assert functional.scratch("test", (big,), np.float32).base is not buf.base  # too large to keep


def test_worker_threads_run_torch_single_threaded() -> None:
    """compute_metrics' worker initialiser sets OpenMP to one thread in that worker only."""
    from concurrent.futures import ThreadPoolExecutor

    from verification.metrics.registry import _omp_set_num_threads, single_threaded_worker

    if _omp_set_num_threads() is None:
        pytest.skip("this torch bundles no libgomp (the initialiser then leaves OpenMP as it is)")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(torch.get_num_threads).result() == 2  # a plain worker inherits the count
        with ThreadPoolExecutor(1, initializer=single_threaded_worker) as pool:
            assert pool.submit(torch.get_num_threads).result() == 1
        assert torch.get_num_threads() == 2  # the calling thread keeps its own
    finally:
        torch.set_num_threads(before)


def test_chunk_spans_cover_the_batch_and_shrink_at_the_end() -> None:
    """Guided chunks: contiguous, covering every pair once, never over ``rows``; with two workers the last
    chunks shrink (both workers finish together), with one they are all ``rows`` (but the last)."""
    from verification.metrics.registry import chunk_spans

    for n, rows, workers in [(1000, 20, 2), (1000, 20, 1), (7, 3, 2), (1, 20, 2), (45, 20, 4)]:
        spans = chunk_spans(n, rows, workers)
        assert spans[0][0] == 0
        assert spans[-1][1] == n
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(spans))
        sizes = [stop - start for start, stop in spans]
        assert all(1 <= s <= rows for s in sizes)
        assert sizes == sorted(sizes, reverse=True)
    two = [stop - start for start, stop in chunk_spans(1000, 20, 2)]
    assert two[0] == 20
    assert two[-1] == 20 // 8  # the last chunk is an eighth of a full one
    assert [stop - start for start, stop in chunk_spans(1000, 20, 1)] == [20] * 50
