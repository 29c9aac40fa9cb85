"""The metric registry: every metric with its label, direction and range, and one batched entry point."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from verification.metrics import functional as fn
from verification.metrics.functional import ArrayLike, MetricResult, Threshold, prepare
from verification.metrics.wasserstein import sliced_wasserstein

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
        sliced_wasserstein,
        False,
        "sliced earth-mover distance on the [0,1]² pixel grid",
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
# everything the layer resolved while making every metric about 12× cheaper than at 224×224.
DEFAULT_SIZE: tuple[int, int] = (64, 64)


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
    """
    chosen = tuple(DEFAULT_METRICS if names is None else names)
    unknown = [n for n in chosen if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    with torch.inference_mode():
        a, b = prepare(maps, refs, size, normalize=normalize)
        values: dict[str, np.ndarray] = {}
        reasons: dict[str, dict[int, str]] = {}
        for name in chosen:  # one batched call per metric, never per pair
            spec = METRICS[name]
            kwargs = dict((options or {}).get(name, {}))
            if spec.uses_threshold:
                kwargs.setdefault("threshold", threshold)
            res = spec.fn(a, b, **kwargs)
            values[name] = res.values
            reasons[name] = res.reasons
    return MetricValues(values, reasons)
