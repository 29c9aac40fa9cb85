"""E0, the input-validity gate (METHODS.md §3): which images can be assessed at all.

An image is *not assessable* when

* the model's garbage class (or a separate gate model's) wins — the input was rejected as out-of-distribution;
* the **early feature maps** of the model under test shift away from its own early features on the bundle's
  stored reference images (:mod:`verification.features`: the mean |z| of per-channel statistics, and the SSIM
  of channel-mean maps); or
* the **image statistics** (model-free: grey-level percentiles, spread, edge energy; the largest |z| against
  the reference images, so one shifted statistic is enough) shift away from the reference images', or the
  **layout** does: 1 − Pearson correlation of the 16 × 16 grey image with the reference images' mean
  (catches rotated, flipped or cropped films whose statistics look normal).

Reference images are stored in the bundle as small uint8 thumbnails (``THUMB`` px); the images under test take
the same round trip (down to the thumbnail size and back) before their features are compared, so resizing
cannot itself look like a shift. Each score's edge is the far-out fence of the reference images' own
leave-one-out scores, Q3 + 3 × IQR (Tukey), and at least 1.25 × their largest score (+ 0.05 for the layout): a
stated rule that flags strong shifts, not the tail of the in-distribution spread.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from verification.io.records import LoadedModel

THUMB = 128
FENCE = 3.0


def unit_images(model: LoadedModel, x: Tensor) -> Tensor:
    """Model input (N, C, H, W) → grey images (N, 1, H, W) in [0, 1] (undoing the normalisation)."""
    mean = torch.tensor(model.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(model.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x * std + mean).mean(1, keepdim=True).clamp(0.0, 1.0)


def thumbnails(model: LoadedModel, x: Tensor) -> np.ndarray:
    """(N, THUMB, THUMB) uint8 thumbnails of model inputs, as stored in a bundle."""
    u = F.interpolate(unit_images(model, x), size=(THUMB, THUMB), mode="bilinear", antialias=True)
    return np.round(u[:, 0].numpy() * 255).astype(np.uint8)


def from_thumbnails(model: LoadedModel, thumbs: np.ndarray) -> Tensor:
    """Stored thumbnails → model input (N, C, H, W)."""
    u = torch.from_numpy(thumbs.astype(np.float32) / 255.0)[:, None]
    u = F.interpolate(u, size=model.input_size, mode="bilinear", align_corners=False)
    mean = torch.tensor(model.mean, dtype=u.dtype).view(1, -1, 1, 1)
    std = torch.tensor(model.std, dtype=u.dtype).view(1, -1, 1, 1)
    return (u.expand(-1, model.in_channels, -1, -1) - mean) / std


def round_trip(model: LoadedModel, x: Tensor) -> Tensor:
    """The input as a stored thumbnail would give it back (same resampling as the reference images)."""
    return from_thumbnails(model, thumbnails(model, x))


def image_statistics(thumbs: np.ndarray) -> np.ndarray:
    """(N, s, s) uint8 → (N, 12): grey-level percentiles 1/5/25/50/75/95/99, mean, std, mean |gradient|,
    shares of near-black and near-white pixels."""
    u = thumbs.astype(np.float64).reshape(len(thumbs), -1) / 255.0
    pct = np.percentile(u, [1, 5, 25, 50, 75, 95, 99], axis=1).T
    img = thumbs.astype(np.float64) / 255.0
    grad = np.abs(np.diff(img, axis=1)).mean((1, 2)) + np.abs(np.diff(img, axis=2)).mean((1, 2))
    return np.column_stack([pct, u.mean(1), u.std(1), grad, (u < 0.02).mean(1), (u > 0.98).mean(1)])


LAYOUT = 16


def layout(thumbs: np.ndarray) -> np.ndarray:
    """(N, s, s) uint8 → (N, LAYOUT²) area-averaged grey images, each centred and scaled to unit norm."""
    t = torch.from_numpy(thumbs.astype(np.float32) / 255.0)[:, None]
    small = F.adaptive_avg_pool2d(t, LAYOUT).reshape(len(thumbs), -1).numpy().astype(np.float64)
    small -= small.mean(1, keepdims=True)
    return small / np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-9)


def layout_scores(thumbs: np.ndarray, mean_layout: np.ndarray) -> np.ndarray:
    """1 − Pearson correlation of each image's layout with the reference mean layout."""
    ref = mean_layout - mean_layout.mean()
    ref = ref / max(float(np.linalg.norm(ref)), 1e-9)
    return 1.0 - layout(thumbs) @ ref


def _fence(scores: np.ndarray, floor: float = 0.0) -> float:
    """Q3 + 3 IQR, and at least 1.25 × the largest reference score (+ ``floor``): a tight reference set must
    not make its own tail look shifted."""
    q1, q3 = np.percentile(scores, [25, 75])
    return float(max(q3 + FENCE * (q3 - q1), 1.25 * float(np.max(scores)) + floor))


@dataclass(frozen=True)
class InputGate:
    """The gate of one model: its feature reference on the bundle's thumbnails and the image-statistics
    reference, with their edges (``feature_max``, ``ssim_min``, ``stats_max``)."""

    feature: object  # verification.features.FeatureReference
    feature_max: float
    ssim_min: float
    stat_mean: np.ndarray
    stat_std: np.ndarray
    stats_max: float
    n_reference: int
    mean_layout: np.ndarray | None = None
    layout_max: float = float("inf")


def _stat_scores(s: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The largest |z| over the statistics (clipped at 20): one strongly shifted statistic (noise raises the
    edge energy alone) is not diluted by the others."""
    floor = max(1e-3, 0.05 * float(np.median(std)))
    return np.clip(np.abs((s - mean) / np.maximum(std, floor)), 0, 20).max(1)


_GATES: OrderedDict[tuple[object, ...], InputGate] = OrderedDict()
_GATES_LOCK = threading.Lock()
_GATES_MAX = 16


def _gate_key(model: LoadedModel, thumbs: np.ndarray) -> tuple[object, ...]:
    """What a gate depends on: the model's identity, preprocessing and weights as they are now (every
    parameter and buffer with its in-place version counter, so weights changed in place make a new key) and
    the thumbnails."""
    module = model.module
    state = tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))
    prep = (model.content_hash, model.in_channels, model.input_size, model.mean, model.std)
    digest = hashlib.sha256(np.ascontiguousarray(thumbs).tobytes()).hexdigest()
    return (id(module), prep, state, thumbs.shape, str(thumbs.dtype), digest)


def build_gate(model: LoadedModel, thumbs: np.ndarray) -> InputGate:
    """The gate for ``model`` from the bundle's reference thumbnails (at least 5); built once per model and
    thumbnails and then reused (a verify of one image spent about two thirds of its time rebuilding it)."""
    key = _gate_key(model, thumbs)
    with _GATES_LOCK:
        found = _GATES.get(key)
        if found is not None:
            _GATES.move_to_end(key)
            return found
    gate = _build_gate(model, thumbs)
    with _GATES_LOCK:
        _GATES[key] = gate
        while len(_GATES) > _GATES_MAX:
            _GATES.popitem(last=False)
    return gate


def _build_gate(model: LoadedModel, thumbs: np.ndarray) -> InputGate:
    from verification.features import build_feature_reference

    x = from_thumbnails(model, thumbs)
    ref = build_feature_reference(model, x)
    s = image_statistics(thumbs)
    n = len(s)
    loo_mean = (s.sum(0) - s) / (n - 1)
    loo_sq = ((s**2).sum(0) - s**2) / (n - 1)
    loo_std = np.sqrt(np.clip(loo_sq - loo_mean**2, 0, None))
    floor = max(1e-3, 0.05 * float(np.median(s.std(0))))
    loo = np.clip(np.abs((s - loo_mean) / np.maximum(loo_std, floor)), 0, 20).max(1)
    q1, q3 = np.percentile(ref.calib_ssim, [25, 75])
    lay = layout(thumbs)
    loo_layout = np.array(
        [layout_scores(thumbs[i : i + 1], (lay.sum(0) - lay[i]) / (n - 1))[0] for i in range(n)]
    )
    return InputGate(
        feature=ref,
        feature_max=_fence(ref.calib_scores),
        ssim_min=float(q1 - FENCE * (q3 - q1)),
        stat_mean=s.mean(0),
        stat_std=s.std(0),
        stats_max=_fence(loo),
        n_reference=n,
        mean_layout=lay.mean(0),
        layout_max=_fence(loo_layout, floor=0.05),
    )


def apply_gate(
    gate: InputGate | None, model: LoadedModel, x: Tensor, probs: np.ndarray, gate_model: LoadedModel | None
) -> tuple[np.ndarray, list[str | None], dict[str, np.ndarray]]:
    """(assessable (N,), reasons, numbers) for the batch ``x`` whose predictions are ``probs``."""
    from verification.features import check_features

    n = len(x)
    reasons: list[list[str]] = [[] for _ in range(n)]
    numbers: dict[str, np.ndarray] = {}
    if model.garbage_index is not None:
        rejected = probs.argmax(1) == model.garbage_index
        for j in np.nonzero(rejected)[0].tolist():
            reasons[j].append(f"the model's garbage class '{model.garbage_class}' rejected it")
        numbers["E0.garbage"] = rejected.astype(np.float64)
    if gate_model is not None and gate_model.garbage_index is not None:
        from verification.verdict.measure import forward_probs

        gp = forward_probs(gate_model, x)
        rej = gp.argmax(1) == gate_model.garbage_index
        for j in np.nonzero(rej)[0].tolist():
            reasons[j].append(f"the gate model '{gate_model.name}' rejected it as out-of-distribution")
        numbers["E0.gate_model"] = rej.astype(np.float64)
    if gate is not None:
        xr = round_trip(model, x)
        rep = check_features(model, gate.feature, xr)  # type: ignore[arg-type]
        numbers["E0.feature_shift"] = rep.score
        numbers["E0.feature_ssim"] = rep.structure_ssim
        thumbs = thumbnails(model, x)
        stats = _stat_scores(image_statistics(thumbs), gate.stat_mean, gate.stat_std)
        numbers["E0.image_shift"] = stats
        lay = (
            layout_scores(thumbs, gate.mean_layout) if gate.mean_layout is not None else np.zeros(len(thumbs))
        )
        numbers["E0.layout_shift"] = lay
        for i in range(n):
            if rep.score[i] > gate.feature_max:
                reasons[i].append(
                    f"early feature maps shifted (score {rep.score[i]:.2f} > {gate.feature_max:.2f})"
                )
            elif rep.structure_ssim[i] < gate.ssim_min:
                reasons[i].append(
                    "early feature structure differs "
                    f"(SSIM {rep.structure_ssim[i]:.2f} < {gate.ssim_min:.2f})"
                )
            if stats[i] > gate.stats_max:
                reasons[i].append(f"image statistics shifted (score {stats[i]:.2f} > {gate.stats_max:.2f})")
            if lay[i] > gate.layout_max:
                reasons[i].append(f"image layout differs (1 − r = {lay[i]:.2f} > {gate.layout_max:.2f})")
    out = [("; ".join(r) if r else None) for r in reasons]
    return np.array([r is None for r in out], dtype=bool), out, numbers
