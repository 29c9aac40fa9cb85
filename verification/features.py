"""Early feature maps: structural shift that the last-layer attention can miss (METHODS.md §3).

The activations of the first stages of a network (**default** the first two spatial stages by
resolution, found by :func:`verification.cam.layers.stage_outputs`) describe the input's low-level
structure: exposure, contrast, texture, orientation. For each image and stage this module records
per-channel statistics (mean, standard deviation, fraction of positive activations) and the channel-mean
map. A reference built on an in-distribution set holds the mean and spread of every statistic and the
mean channel-mean map per stage; a new image gets

* a **shift score**: the mean |z| of its channel statistics against the reference set (z clipped at ±20, so a
  handful of dead channels cannot dominate), and
* a **structure similarity**: SSIM of its channel-mean maps with the reference's, averaged over stages,

and is flagged when the score is above the reference set's leave-one-out 95th percentile or the similarity
below its 5th (both parameters). The records carry every number.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from verification.cam.chunking import chunk_bounds, pad_rows
from verification.cam.concurrency import exclusive, this_thread_only
from verification.cam.modules import as_module
from verification.errors import LayerError, ShapeError
from verification.io.records import LoadedImage, LoadedModel
from verification.metrics.functional import normalize_maps, resize_maps, ssim

log = logging.getLogger(__name__)

Z_CLIP = 20.0
STATS = ("mean", "std", "active")


def early_layers(model: nn.Module | LoadedModel, input_shape: Sequence[int], count: int = 2) -> list[str]:
    """The first ``count`` stage outputs (one per resolution, in forward order) by dotted name."""
    from verification.cam.layers import stage_outputs

    module = as_module(model)
    stages = stage_outputs(module, input_shape, count=10_000)
    if not stages:
        raise LayerError(
            "the model has no spatial stage outputs; early feature maps need a convolutional model"
        )
    return stages[:count]


@exclusive
def capture_features(module: nn.Module, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Activations (N, C, h, w) of ``layers`` for the batch ``x``: one forward in eval mode under no_grad;
    hooks live for this call only and the modules' train/eval flags are restored."""
    from verification.cam.layers import eval_mode, first_tensor

    named = dict(module.named_modules())
    missing = [name for name in layers if name not in named]
    if missing:
        raise LayerError(f"layer(s) {missing} not found in the model")
    out: dict[str, Tensor] = {}

    def hook(name: str) -> Any:
        def fn(_m: nn.Module, _args: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is None or t.ndim != 4:
                raise LayerError(f"layer '{name}' does not output an (N, C, h, w) map")
            out[name] = t.detach().float()

        return fn

    handles = [named[name].register_forward_hook(this_thread_only(hook(name))) for name in layers]
    parts: dict[str, list[Tensor]] = {name: [] for name in layers}
    try:
        with eval_mode(module), torch.no_grad():
            # in chunks of the batch sizes the model accepts (one chunk unless it fixes its batch size)
            for start, stop in chunk_bounds(module, int(x.shape[0])):
                out.clear()
                module(pad_rows(module, x[start:stop]))
                for name in layers:
                    if name in out:
                        parts[name].append(out[name][: stop - start])
    finally:
        for h in handles:
            h.remove()
    return {name: p[0] if len(p) == 1 else torch.cat(p) for name, p in parts.items() if p}


def channel_statistics(acts: Tensor) -> Tensor:
    """(N, C, h, w) -> (N, 3C): per-channel mean, standard deviation and fraction of positive activations."""
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
    return torch.cat([flat.mean(2), flat.std(2, correction=0), (flat > 0).float().mean(2)], dim=1)


def channel_mean_maps(acts: Tensor, grid: tuple[int, int]) -> Tensor:
    """(N, C, h, w) -> (N, gh, gw): the channel-mean map, resized and min-max normalised to [0, 1]."""
    return normalize_maps(resize_maps(acts.mean(1), grid))


@dataclass(frozen=True)
class FeatureSummary:
    """Per image: concatenated channel statistics (N, D), channel-mean maps per layer (N, L, gh, gw)."""

    layers: tuple[str, ...]
    stats: np.ndarray
    maps: np.ndarray


def summarise_features(
    model: nn.Module | LoadedModel,
    images: Sequence[LoadedImage] | Tensor,
    layers: Sequence[str],
    *,
    grid: tuple[int, int] = (32, 32),
    batch_size: int = 32,
) -> FeatureSummary:
    """Statistics and channel-mean maps of ``layers`` for every image (batched forwards)."""
    from verification.io.images import to_tensor

    module = as_module(model)
    stats, maps = [], []
    for s in range(0, len(images), batch_size):
        chunk = images[s : s + batch_size]
        if isinstance(chunk, Tensor):
            x = chunk
        elif isinstance(model, LoadedModel):
            x = to_tensor(list(chunk), model)
        else:
            raise ShapeError(
                "LoadedImages need a LoadedModel (for its preprocessing); pass a tensor otherwise"
            )
        acts = capture_features(module, x, layers)
        stats.append(torch.cat([channel_statistics(acts[name]) for name in layers], dim=1))
        maps.append(torch.stack([channel_mean_maps(acts[name], grid) for name in layers], dim=1))
    return FeatureSummary(tuple(layers), torch.cat(stats).numpy(), torch.cat(maps).numpy())


def _z_scores(stats: np.ndarray, mean: np.ndarray, std: np.ndarray, floor: np.ndarray) -> np.ndarray:
    z = (stats - mean) / np.maximum(std, floor)
    return np.clip(np.abs(z), 0.0, Z_CLIP).mean(axis=-1)


def _map_ssim(maps: np.ndarray, ref_maps: np.ndarray) -> np.ndarray:
    """Mean over layers of SSIM(maps[:, l], ref_maps[..., l]); ref_maps (L, h, w) or (N, L, h, w)."""
    n, n_layers = maps.shape[:2]
    a = torch.from_numpy(maps.reshape(n * n_layers, *maps.shape[2:]).astype(np.float64))
    r = np.broadcast_to(ref_maps, maps.shape).reshape(n * n_layers, *maps.shape[2:])
    vals = ssim(a, torch.from_numpy(np.array(r, dtype=np.float64))).values
    return vals.reshape(n, n_layers).mean(1)


@dataclass(frozen=True)
class FeatureReference:
    """In-distribution description of the early layers: statistics' mean / std / floor (D,), mean channel-mean
    maps (L, gh, gw), the reference set's leave-one-out scores and similarities, and the flag thresholds."""

    layers: tuple[str, ...]
    grid: tuple[int, int]
    stat_mean: np.ndarray
    stat_std: np.ndarray
    stat_floor: np.ndarray
    mean_maps: np.ndarray
    calib_scores: np.ndarray
    calib_ssim: np.ndarray
    score_max: float
    ssim_min: float
    score_percentile: float = 95.0
    ssim_percentile: float = 5.0

    def channel_stats(self, activations: Mapping[str, np.ndarray], stat: str) -> list[ChannelStats]:
        """One image's per-channel ``stat`` (one of :data:`STATS`) in each reference layer beside the
        reference set's mean and std. ``activations``: layer → (C, h, w) of that image. The reference stores,
        per layer in order, the C means, then the C stds, then the C active fractions; this reads that
        layout."""
        if stat not in STATS:
            raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
        k = STATS.index(stat)
        out = []
        offset = 0
        for layer in self.layers:
            acts = np.asarray(activations[layer])
            c = acts.shape[0]
            image = channel_statistics(torch.from_numpy(acts[None]).float()).numpy()[0]
            part = slice(offset + k * c, offset + (k + 1) * c)
            out.append(
                ChannelStats(
                    layer=layer,
                    stat=stat,
                    image=image[k * c : (k + 1) * c],
                    ref_mean=self.stat_mean[part],
                    ref_std=self.stat_std[part],
                )
            )
            offset += len(STATS) * c
        return out


@dataclass(frozen=True)
class ChannelStats:
    """One layer's per-channel statistic for an image beside the reference set's mean and spread (C,) each."""

    layer: str
    stat: str  # "mean" | "std" | "active"
    image: np.ndarray
    ref_mean: np.ndarray
    ref_std: np.ndarray

    def band(self, k: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
        """The reference set's mean ± ``k`` std per channel, (C,) each."""
        return self.ref_mean - k * self.ref_std, self.ref_mean + k * self.ref_std

    def outside(self, k: float = 2.0) -> np.ndarray:
        """(C,) bool: the channels where this image lies outside :meth:`band`."""
        lo, hi = self.band(k)
        return (self.image < lo) | (self.image > hi)


def build_feature_reference(
    model: nn.Module | LoadedModel,
    images: Sequence[LoadedImage] | Tensor,
    *,
    layers: Sequence[str] | None = None,
    count: int = 2,
    grid: tuple[int, int] = (32, 32),
    score_percentile: float = 95.0,
    ssim_percentile: float = 5.0,
    batch_size: int = 32,
) -> FeatureReference:
    """Reference of the early feature maps on an in-distribution set, calibrated leave-one-out: each image's
    score is computed against the statistics of the others."""
    if len(images) < 3:
        raise ShapeError("a feature reference needs at least three in-distribution images")
    if layers is None:
        if isinstance(model, LoadedModel):
            shape: tuple[int, ...] = (model.in_channels, *model.input_size)
        elif isinstance(images, Tensor):
            shape = tuple(int(v) for v in images.shape[1:])
        else:
            raise ShapeError(
                "LoadedImages need a LoadedModel (for its preprocessing); pass a tensor otherwise"
            )
        layers = early_layers(model, shape, count)
    summ = summarise_features(model, images, layers, grid=grid, batch_size=batch_size)
    s = summ.stats.astype(np.float64)
    n = len(s)
    mean, std = s.mean(0), s.std(0)
    floor = np.full_like(std, max(0.05 * float(np.median(std)), 1e-6))
    # Leave-one-out mean and std of every statistic, in closed form.
    loo_mean = (n * mean - s) / (n - 1)
    loo_var = ((s**2).sum(0) - s**2) / (n - 1) - loo_mean**2
    loo_std = np.sqrt(np.clip(loo_var, 0.0, None))
    calib_scores = _z_scores(s, loo_mean, loo_std, floor)
    maps = summ.maps.astype(np.float64)
    loo_maps = (maps.sum(0, keepdims=True) - maps) / (n - 1)
    calib_ssim = _map_ssim(maps, loo_maps)
    return FeatureReference(
        layers=tuple(layers),
        grid=grid,
        stat_mean=mean,
        stat_std=std,
        stat_floor=floor,
        mean_maps=maps.mean(0),
        calib_scores=calib_scores,
        calib_ssim=calib_ssim,
        score_max=float(np.percentile(calib_scores, score_percentile)),
        ssim_min=float(np.percentile(calib_ssim, ssim_percentile)),
        score_percentile=score_percentile,
        ssim_percentile=ssim_percentile,
    )


BROAD_SHIFT_RATE = 0.2
"""A set whose flagged fraction exceeds this is called broadly shifted (the Features page's rule since the
first release)."""


@dataclass(frozen=True)
class FeatureShiftReport:
    """Per image: shift ``score`` (mean |z|), ``structure_ssim``, the two flags and ``flagged`` (either);
    with the reference thresholds they were judged against."""

    names: tuple[str, ...]
    score: np.ndarray
    structure_ssim: np.ndarray
    score_flag: np.ndarray
    ssim_flag: np.ndarray
    score_max: float
    ssim_min: float

    @property
    def flagged(self) -> np.ndarray:
        return self.score_flag | self.ssim_flag

    @property
    def flag_rate(self) -> float:
        return float(self.flagged.mean()) if len(self.names) else float("nan")

    @property
    def broad_shift(self) -> bool:
        """Whether more than :data:`BROAD_SHIFT_RATE` of the images are flagged (an empty set is not)."""
        return self.flag_rate > BROAD_SHIFT_RATE

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "image": self.names[i],
                "shift_score": float(self.score[i]),
                "score_max": self.score_max,
                "structure_ssim": float(self.structure_ssim[i]),
                "ssim_min": self.ssim_min,
                "flagged": bool(self.flagged[i]),
            }
            for i in range(len(self.names))
        ]


def check_features(
    model: nn.Module | LoadedModel,
    reference: FeatureReference,
    images: Sequence[LoadedImage] | Tensor,
    *,
    batch_size: int = 32,
) -> FeatureShiftReport:
    """Score every image's early feature maps against ``reference`` and flag the shifted ones."""
    summ = summarise_features(model, images, reference.layers, grid=reference.grid, batch_size=batch_size)
    score = _z_scores(
        summ.stats.astype(np.float64), reference.stat_mean, reference.stat_std, reference.stat_floor
    )
    sim = _map_ssim(summ.maps.astype(np.float64), reference.mean_maps)
    names = (
        tuple(f"image {i}" for i in range(len(score)))
        if isinstance(images, Tensor)
        else tuple(img.name for img in images)
    )
    return FeatureShiftReport(
        names=names,
        score=score,
        structure_ssim=sim,
        score_flag=score > reference.score_max,
        ssim_flag=sim < reference.ssim_min,
        score_max=reference.score_max,
        ssim_min=reference.ssim_min,
    )
