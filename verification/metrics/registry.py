"""The metric registry: every metric with its label, direction and range, and one batched entry point."""

from __future__ import annotations

import ctypes
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verification.errors import InvalidInputError, ShapeError
from verification.metrics import functional as fn
from verification.metrics.functional import ArrayLike, MetricResult, Threshold, as_batch, check_grid, prepare
from verification.metrics.wasserstein import wasserstein
from verification.options import check_keyword_options

MetricFn = Callable[..., MetricResult]


@dataclass(frozen=True)
class MetricSpec:
    """A similarity metric: ``fn(maps, refs, **options) -> MetricResult`` on prepared (N|1, H, W) tensors.

    ``higher_is_better`` is True for similarities, False for distances; ``range`` is the (min, max) the values
    can take (``math.inf`` for unbounded); ``uses_threshold`` says whether ``fn`` takes ``threshold=``.
    """

    name: str
    label: str
    higher_is_better: bool
    range: tuple[float, float]
    fn: MetricFn
    uses_threshold: bool = False
    description: str = ""


METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add a metric to :data:`METRICS` (names are unique)."""
    if spec.name in METRICS:
        raise ValueError(f"metric {spec.name!r} is already registered")
    METRICS[spec.name] = spec
    return spec


for _spec in (
    MetricSpec("iou", "IoU", True, (0.0, 1.0), fn.iou, True, "Jaccard index of the binarised maps"),
    MetricSpec("dice", "Dice", True, (0.0, 1.0), fn.dice, True, "Dice coefficient of the binarised maps"),
    MetricSpec("ssim", "SSIM", True, (-1.0, 1.0), fn.ssim, False, "structural similarity, Gaussian σ = 1.5"),
    MetricSpec(
        "cosine", "Cosine", True, (-1.0, 1.0), fn.cosine, False, "cosine similarity of the flattened maps"
    ),
    MetricSpec("pearson", "Pearson r", True, (-1.0, 1.0), fn.pearson, False, "Pearson correlation"),
    MetricSpec("kl", "KL(ref‖map)", False, (0.0, math.inf), fn.kl_divergence, False, "KL divergence, nats"),
    MetricSpec(
        "wasserstein",
        "Wasserstein (spatial)",
        False,
        (0.0, math.sqrt(2.0)),
        wasserstein,
        False,
        "earth mover's distance on the [0,1]² grid (≤ 32² cells), exact transport on a 32-neighbour grid "
        "graph: at most 1.31 % above the Euclidean distance",
    ),
    MetricSpec(
        "wasserstein_values",
        "Wasserstein (1-D values)",
        False,
        (0.0, 1.0),
        fn.wasserstein_values,
        False,
        "1-D distance between the maps' value distributions (not spatial)",
    ),
):
    register_metric(_spec)

DEFAULT_METRICS: tuple[str, ...] = ("iou", "dice", "ssim", "cosine", "pearson", "kl", "wasserstein")
# Attention maps carry their layer's resolution (7-28 px for a 224 px input), so a 64×64 comparison grid keeps
# everything the layer resolved at 1/12 of the pixels of 224×224. The grid is the caller's choice (size=, the
# CLI's --grid); where annotations are involved the callers default to the native resolution (a lesion a few
# pixels wide does not survive 64×64): verification.reference.default_grid, annotation references, the
# dashboard's drawn region.
DEFAULT_SIZE: tuple[int, int] = (64, 64)


# Rows of one chunk: their working memory (counted as 16 copies of each pair's grid, a margin over the few
# copies that MAX_GRID_PIXELS in functional lists) stays under this, so a batch of any length compares in
# bounded memory. Chunks are also kept small enough (CACHE_BYTES of prepared maps per side) that the metrics
# re-read them from the CPU caches rather than from memory: at 224×224 in float32, 20 pairs.
WORK_BYTES = 256 * 1024 * 1024
_COPIES_PER_ROW = 16
CACHE_BYTES = 4 * 1024 * 1024


@lru_cache(maxsize=1)
def _omp_set_num_threads() -> Callable[[int], None] | None:
    """``omp_set_num_threads`` of the OpenMP runtime torch bundles (Linux wheels), or None."""
    for lib in sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*")):
        try:
            return ctypes.CDLL(str(lib)).omp_set_num_threads
        except (OSError, AttributeError):
            continue
    return None


def single_threaded_worker() -> None:
    """Initialiser of compute_metrics' worker threads: their torch operations (resizing, pooling)
    run inline, without torch's OpenMP team, so that the workers alone share out the cores (with a team each,
    2 workers run 4 threads on 2 cores). Measured against workers that keep their teams (``python
    bench/metrics.py --omp-busy 4``, 2026-12-01, 2 CPUs at load 3.4–6.1, with 0, 2 or 4 busy processes): the
    teams took 0.7–2.1× the time, no consistent direction on that machine. OpenMP's thread count is per
    calling thread, so nothing outside these workers changes."""
    torch.get_num_threads()  # torch sets this thread's OpenMP count on first use; override it after
    setter = _omp_set_num_threads()
    if setter is not None:
        setter(1)


def chunk_rows(grid: tuple[int, int], itemsize: int) -> int:
    """Pairs per chunk of :func:`compute_metrics` on ``grid`` with ``itemsize``-byte values."""
    pixels = grid[0] * grid[1] * itemsize
    return max(1, min(WORK_BYTES // (pixels * _COPIES_PER_ROW), CACHE_BYTES // pixels))


def chunk_spans(n: int, rows: int, workers: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of :func:`compute_metrics`' chunks of ``n`` pairs, at most ``rows`` each. With
    several workers taking chunks in order, the last ones shrink (guided scheduling: a chunk is at most
    1 / (2·workers) of the pairs left, and at least ``rows // 8``), so that the workers finish together: with
    equal chunks, one worker sits idle for up to a whole chunk at the end (20 pairs at 224² with the spatial
    Wasserstein: 42 ms of CPU, 2.1 ms a pair) while the other finishes its last one. Measured on all seven,
    1,000 pairs at 224², 2 workers, 5 runs each (2026-12-01, load 2.5–3.3 on 2 CPUs): the gap between the
    two workers' last chunks 3–178 ms with equal chunks, 0.5–17 ms guided (7 more chunks)."""
    least = max(1, rows // 8)
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n:
        size = rows if workers < 2 else min(rows, max(least, -(-(n - start) // (2 * workers))))
        spans.append((start, min(n, start + size)))
        start += size
    return spans


class MetricValues(dict[str, np.ndarray]):
    """``{metric name: (N,) float64 values}``; ``reasons[name][i]`` says why ``self[name][i]`` is NaN."""

    def __init__(self, values: dict[str, np.ndarray], reasons: dict[str, dict[int, str]]) -> None:
        super().__init__(values)
        self.reasons = reasons


def compute_metrics(
    maps: ArrayLike,
    refs: ArrayLike,
    names: Sequence[str] | None = None,
    *,
    threshold: Threshold = 0.5,
    size: tuple[int, int] | None = DEFAULT_SIZE,
    normalize: bool = True,
    options: dict[str, dict[str, Any]] | None = None,
) -> MetricValues:
    """Compare N maps with N references (or with one), every metric batched.

    ``maps`` (N, H, W) | (H, W); ``refs`` (N, H', W') | (1, H', W') | (H', W'). Both are resized to ``size``
    (default :data:`DEFAULT_SIZE`; ``None`` keeps the maps' own grid) and min-max normalised to [0, 1] (see
    :func:`prepare`). ``names`` defaults to the seven of :data:`DEFAULT_METRICS`; ``threshold`` (a number or
    ``"otsu"``) binarises for IoU and Dice; ``options`` passes keyword arguments per metric, e.g.
    ``{"wasserstein": {"n_directions": 128}}``.

    A pair in which the map or the reference holds NaN or ±inf is not scored: NaN in every metric, with the
    reason "map has NaN or infinite values". Batches are processed in chunks of rows whose working memory
    stays under :data:`WORK_BYTES`. Bad arguments raise typed errors before any work:
    :class:`~verification.errors.InvalidInputError` (unknown metric or option, text or complex values, a
    threshold outside [0, 1] or NaN, a size that is not two positive integers),
    :class:`~verification.errors.ShapeError` (empty batch, 0-pixel maps, mismatched batch sizes, wrong number
    of dimensions), :class:`~verification.errors.InputTooLargeError` (a grid beyond
    :data:`~verification.metrics.functional.MAX_GRID_PIXELS`).
    """
    chosen = _check_names(names)
    threshold = fn.check_threshold(threshold)
    per_metric = _check_options(options, chosen)
    a_all = as_batch(maps, "maps")
    b_all = as_batch(refs, "refs")
    na, nb = int(a_all.shape[0]), int(b_all.shape[0])
    if na != nb and 1 not in (na, nb):
        raise ShapeError(
            f"cannot compare {na} maps with {nb} references: "
            "give one reference per map or one reference for all"
        )
    grid = check_grid(size if size is not None else (int(a_all.shape[-2]), int(a_all.shape[-1])))
    n = max(na, nb)
    itemsize = 8 if torch.float64 in (a_all.dtype, b_all.dtype) else 4
    rows = chunk_rows(grid, itemsize)

    def run(span: tuple[int, int]) -> dict[str, MetricResult]:
        a = a_all[span[0] : span[1]] if na > 1 else a_all
        b = b_all[span[0] : span[1]] if nb > 1 else b_all
        out: dict[str, MetricResult] = {}
        # IoU and Dice share their counts, and prepare's row checks are reused, within the chunk
        pixels, dt = grid[0] * grid[1], np.float64 if itemsize == 8 else np.float32
        buffers = (
            fn.scratch("prepare_a", (a.shape[0], pixels), dt) if a.shape[-2:] == grid else None,
            fn.scratch("prepare_b", (b.shape[0], pixels), dt) if b.shape[-2:] == grid else None,
        )
        with torch.inference_mode(), fn.shared_work():
            pa, pb = prepare(a, b, grid, normalize=normalize, buffers=buffers)
            for name in chosen:  # one batched call per metric and chunk, never per pair
                spec = METRICS[name]
                kwargs = dict(per_metric.get(name, {}))
                if spec.uses_threshold:
                    kwargs.setdefault("threshold", threshold)
                out[name] = spec.fn(pa, pb, **kwargs)
        return out

    workers = min(-(-n // rows), max(1, torch.get_num_threads()))
    spans = chunk_spans(n, rows, workers)
    if workers > 1:  # chunks in parallel on single-threaded workers (see single_threaded_worker)
        with ThreadPoolExecutor(workers, initializer=single_threaded_worker) as pool:
            results = list(pool.map(run, spans))
    else:
        results = [run(s) for s in spans]
    parts: dict[str, list[np.ndarray]] = {name: [r[name].values for r in results] for name in chosen}
    reasons: dict[str, dict[int, str]] = {name: {} for name in chosen}
    for (start, _), r in zip(spans, results):
        for name in chosen:
            reasons[name].update({start + i: why for i, why in r[name].reasons.items()})
    values = {name: np.concatenate(parts[name]) for name in chosen}
    return MetricValues(values, reasons)


def _check_names(names: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    try:
        chosen = tuple(DEFAULT_METRICS if names is None else names)
    except TypeError:
        raise InvalidInputError(f"names must be a list of metric names, got {type(names).__name__}") from None
    unknown = [str(n)[:40] for n in chosen if not isinstance(n, str) or n not in METRICS]
    if unknown:
        raise InvalidInputError(f"unknown metric(s) {unknown[:5]}; known: {sorted(METRICS)}")
    return chosen


def _check_options(
    options: Mapping[str, Mapping[str, Any]] | None, chosen: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per-metric keyword options: known metrics only, and only keywords the metric's function takes."""

    def allowed(name: str) -> set[str]:
        params = list(inspect.signature(METRICS[name].fn).parameters.values())[2:]
        return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    out = check_keyword_options(
        options, kind="metric", known=METRICS, allowed=allowed, known_hint=f"; known: {sorted(METRICS)}"
    )
    for opts in out.values():
        if "threshold" in opts:
            opts["threshold"] = fn.check_threshold(opts["threshold"])
    return out
