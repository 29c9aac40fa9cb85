"""Score-CAM (Wang et al. 2020), exact and fast.

Score-CAM weights the activation channels ``A[k]`` (N, K, h, w) of one layer by what happens to the target
score when the model is run again on the input masked by each channel, K extra forwards per image:
``M_k = minmax(up(A[k]))`` (bilinear to the input size, min-max per channel; a constant channel gives an
all-zero mask), score the masked input ``X ⊙ M_k``. Weightings:

- ``"paper"`` (**default**): ``w_k = p_c(X ⊙ M_k) − p_c(X_b)``, ``p_c`` the softmax probability of the
  target class (the target's ``probabilities``), ``X_b`` the baseline input: **the all-zero tensor in the
  model's input space** (``X ⊙ 0``, the input under an all-zero mask; for a normalised model this is the
  dataset-mean image, not black pixels), or the tensor passed as ``baseline``. Wang et al. define the
  "increase of confidence" against a baseline ``X_b``; their reference code leaves it out (a constant
  shift of every weight by ``p_c(X_b)``, which changes the map). A constant channel then gets exactly
  ``w_k = 0``.
- ``"gradcam_lib"``: pytorch-grad-cam's ``ScoreCAM``: ``w = softmax_k(y_c(X ⊙ M_k))`` across channels of the
  masked target logits.

Map ``Σ_k w_k A[k]`` (kept as ``raw``), then ReLU, bilinear upsampling to the input and min-max
normalisation. Masked copies are streamed in chunks of ``chunk_size`` (sample, channel) rows under
``torch.inference_mode()``; never more than ``chunk_size`` copies exist at once, rows of different samples
share a chunk but each is scored against its own sample's target.

Ablation-CAM, the other perturbation method, is :mod:`verification.cam.ablation` (re-exported here); what
both share with the captum attributions is :mod:`verification.cam.perturb`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from verification.cam.ablation import ablation_cam
from verification.cam.capture import capture
from verification.cam.chunking import limit_chunk, pad_rows, run_chunked
from verification.cam.concurrency import exclusive
from verification.cam.inference import ChunkSizer, inference_forward
from verification.cam.layers import eval_mode
from verification.cam.methods import register_method
from verification.cam.modules import ModelLike
from verification.cam.perturb import (
    check_chunk,
    forward_output,
    make_result,
    prepare,
    row_scorer,
    run_forward,
)
from verification.cam.progress import Progress, report
from verification.cam.records import CamResult
from verification.cam.targets import TargetSpec
from verification.errors import InvalidInputError

__all__ = ["ablation_cam", "fast_fidelity", "score_cam"]

Mode = Literal["exact", "fast"]
Weighting = Literal["paper", "gradcam_lib"]
Select = Literal["cluster", "variance", "gradcam"]

SATURATED_BASELINE = 0.99
"""Paper weighting: a sample whose baseline input already has this class probability is named in the
provenance (``saturated_baseline``); its weights are at most ``1 − p_b`` and its map is not evidence."""

_BASELINE_NOTE = "zeros: the all-zero input in the model's input space (X ⊙ 0)"


# ---------------------------------------------------------------------------------------------------------
# Score-CAM

_ROUNDS = 4  # refinement rounds of the clustered fast mode, after the medoid round
_KMEANS_ITERS = 20


def _unit_maps(acts: Tensor) -> Tensor:
    """Each channel min-max normalised at the layer's resolution, (N, K, h·w) float32; constant → all zero.

    Bilinear upsampling is linear and keeps constants, so ``minmax(up(A_k)) == minmax(up(unit_k))``: two
    channels with equal unit maps give the same mask (one forward serves both), and the zero unit map is
    exactly a constant channel, whose mask is all zero.
    """
    flat = acts.flatten(2).float()
    lo = flat.min(dim=2, keepdim=True).values
    span = flat.max(dim=2, keepdim=True).values - lo
    return torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1.0), 0.0)


def _masks(unit: Tensor, hw: tuple[int, int], size: tuple[int, int], align_corners: bool) -> Tensor:
    """Score-CAM masks (R, 1, H, W) from unit maps (R, h·w): bilinear to the input size, then min-max."""
    masks = unit.reshape(-1, 1, *hw)
    if hw == size:
        return masks
    masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=align_corners)
    flat = masks.flatten(1)
    lo = flat.min(dim=1).values[:, None, None, None]
    span = flat.max(dim=1).values[:, None, None, None] - lo
    return torch.where(span > 0, (masks - lo) / torch.where(span > 0, span, 1.0), 0.0)


@dataclass
class _Sample:
    """One sample's distinct non-constant unit maps and, per channel, which one it uses (−1: constant)."""

    distinct: Tensor  # (M, h·w)
    owner: Tensor  # (K,) long
    mass: Tensor  # (M,) Σ |A_k|₁ of the channels using each distinct map
    value: Tensor  # (M,) float64 scorer value, NaN until scored
    scored: Tensor  # (M,) bool

    @classmethod
    def of(cls, unit: Tensor, acts: Tensor) -> _Sample:
        distinct, inverse = torch.unique(unit, dim=0, return_inverse=True)
        nonzero = distinct.abs().sum(dim=1) > 0
        keep = torch.cumsum(nonzero.long(), 0) - 1  # index among the non-zero rows
        owner = torch.where(nonzero[inverse], keep[inverse], -1)
        m = int(nonzero.sum())
        l1 = acts.abs().flatten(1).sum(dim=1).double()
        used = owner >= 0
        mass = torch.zeros(m, dtype=torch.float64, device=unit.device).index_add_(0, owner[used], l1[used])
        value = torch.full((m,), math.nan, dtype=torch.float64, device=unit.device)
        scored = torch.zeros(m, dtype=torch.bool, device=unit.device)
        return cls(distinct[nonzero], owner, mass, value, scored)


def _kmeans_medoids(points: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Indices of up to ``k`` medoids of ``points`` (M, D): k-means++ seeding, Lloyd iterations, then in each
    cluster the member nearest its centre."""
    m = points.shape[0]
    first = int(torch.randint(m, (1,), generator=generator))
    picks = [first]
    dist = ((points - points[first]) ** 2).sum(dim=1)
    for _ in range(k - 1):
        total = float(dist.sum())
        if total <= 0:
            break
        nxt = int(torch.multinomial(dist / total, 1, generator=generator))
        picks.append(nxt)
        dist = torch.minimum(dist, ((points - points[nxt]) ** 2).sum(dim=1))
    centres = points[picks].clone()
    labels = torch.cdist(points, centres).argmin(dim=1)
    for _ in range(_KMEANS_ITERS):
        counts = torch.bincount(labels, minlength=centres.shape[0]).clamp(min=1)
        centres = torch.zeros_like(centres).index_add_(0, labels, points) / counts[:, None].to(points.dtype)
        new = torch.cdist(points, centres).argmin(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
    dist_to_centre = ((points - centres[labels]) ** 2).sum(dim=1)
    medoids = []
    for j in range(centres.shape[0]):
        members = torch.nonzero(labels == j).flatten()
        if members.numel():
            medoids.append(int(members[dist_to_centre[members].argmin()]))
    return torch.tensor(sorted(set(medoids)), dtype=torch.long)


def _nearest_scored(sample: _Sample) -> Tensor:
    """For every distinct map, the index of the nearest scored one (itself when scored)."""
    scored = torch.nonzero(sample.scored).flatten()
    nearest = scored[torch.cdist(sample.distinct, sample.distinct[scored]).argmin(dim=1)]
    return torch.where(sample.scored, torch.arange(len(nearest), device=nearest.device), nearest)


def _next_picks(sample: _Sample, key: Tensor, count: int) -> Tensor:
    """The ``count`` unscored distinct maps whose nearest scored neighbour has the highest search key (the
    masked input closest to keeping the class), larger channel mass first among equals."""
    estimate = key[_nearest_scored(sample)]
    unscored = torch.nonzero(~sample.scored).flatten()
    by_mass = unscored[torch.argsort(sample.mass[unscored], descending=True, stable=True)]
    order = by_mass[torch.argsort(estimate[by_mass], descending=True, stable=True)]
    return order[:count]


class _Stream:
    """Masked forwards of (sample, unit map) rows in chunks, counting progress across calls."""

    def __init__(
        self,
        forward: Callable[[Tensor], Tensor],
        xi: Tensor,
        hw: tuple[int, int],
        align_corners: bool,
        scorer: Callable[[Tensor, Tensor], Tensor],
        chunks: ChunkSizer,
        progress: Progress | None,
        total: int,
        label: str,
    ) -> None:
        self.forward, self.xi, self.hw, self.align_corners = forward, xi, hw, align_corners
        self.scorer, self.chunks, self.progress = scorer, chunks, progress
        self.total, self.label = total, label
        self.done = 0

    def __call__(self, rows_i: Tensor, units: Tensor) -> Tensor:
        """Scorer values (R,) float64 of ``xi[rows_i] ⊙ mask(units)``."""
        values = torch.empty(rows_i.numel(), dtype=torch.float64, device=units.device)
        size = (self.xi.shape[2], self.xi.shape[3])
        start = 0
        while start < rows_i.numel():
            stop = start + self.chunks.next(rows_i.numel() - start)
            ii = rows_i[start:stop]
            masks = _masks(units[start:stop], self.hw, size, self.align_corners).to(self.xi.dtype)
            out = run_forward(self.forward, self.xi[ii] * masks)
            values[start:stop] = self.scorer(out, ii).to(values.device)
            del masks, out
            self.chunks.done(stop - start)
            self.done += stop - start
            message = f"{self.label}: {self.done}/{self.total} masked forwards"
            report(self.progress, self.done, self.total, message)
            start = stop
        return values

    def score(self, samples: list[_Sample], picks: list[Tensor]) -> None:
        """Score the picked distinct maps of every sample in one stream (rows of samples share chunks)."""
        rows_i = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(picks)])
        if rows_i.numel() == 0:
            return
        units = torch.cat([s.distinct[p] for s, p in zip(samples, picks)])
        values = self(rows_i, units)
        start = 0
        for s, p in zip(samples, picks):
            s.value[p] = values[start : start + len(p)]
            s.scored[p] = True
            start += len(p)


def _select_channels(acts: Tensor, grads: Tensor | None, k: int, select: Select) -> Tensor:
    """Top-k channel indices per sample (N, k), by spatial activation variance or by Grad-CAM weight."""
    if select == "variance":
        key = acts.flatten(2).var(dim=2, unbiased=False)
    elif select == "gradcam":
        if grads is None:
            raise ValueError("select='gradcam' needs the gradients of the capture pass.")
        key = grads.flatten(2).mean(dim=2)
    else:
        raise ValueError(f"select must be 'variance' or 'gradcam' for top-k, got {select!r}.")
    return key.topk(min(k, acts.shape[1]), dim=1).indices


def _span(counts: list[int]) -> str:
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


@register_method(
    "scorecam",
    label="Score-CAM",
    reference="Wang et al., CVPR-W 2020",
    kind="perturbation",
    needs_gradients=False,
)
@exclusive
def score_cam(
    model: ModelLike,
    x: Tensor,
    layer: str,
    target: TargetSpec = None,
    *,
    mode: Mode = "exact",
    weighting: Weighting = "paper",
    k: int = 64,
    select: Select = "cluster",
    chunk_size: int | None = None,
    progress: Progress | None = None,
    normalize: bool = True,
    baseline: Tensor | None = None,
    align_corners: bool = False,
    optimize: bool = True,
    seed: int = 0,
) -> CamResult:
    """Score-CAM (Wang et al. 2020) at ``layer`` for ``x`` (N, C, H, W).

    ``mode="exact"`` scores every channel: one masked forward per *distinct* mask (channels whose masks are
    equal — every constant channel, channels equal up to a positive affine map — share one forward; the
    scores are the same numbers). ``mode="fast"`` spends at most ``k`` masked forwards per image:

    * ``select="cluster"`` (**default**): k-means (k-means++ seeded with ``seed``) groups the channels'
      normalised maps into ``⌈k/2⌉`` clusters and scores each cluster's medoid; the other ``⌊k/2⌋`` forwards
      go, over four rounds, to the unscored masks whose nearest scored neighbour came closest to keeping the
      class (highest log-probability, or target score for ``"gradcam_lib"``); every unscored channel then
      takes the score of its nearest scored mask. Score-CAM weights of a trained model are nearly binary (a
      masked input keeps the class or loses it), so the search spends the forwards where the weight is.
    * ``select="variance"`` / ``"gradcam"``: the top ``k`` channels by activation variance or by Grad-CAM
      weight (one extra backward), the others weight 0 — METHODS.md's top-k, kept for comparison.

    ``weighting`` is ``"paper"`` (baseline-subtracted class probability) or ``"gradcam_lib"`` (softmax across
    channels of the masked target scores); see the module docstring. ``target``: None (predicted class), a
    class, one class per sample or a Target of :mod:`verification.cam.targets`. ``align_corners`` is the
    convention for upsampling the masks (False as in Wang et al.'s code; pytorch-grad-cam uses True).
    ``chunk_size``: rows per masked forward; None tunes it (:class:`~verification.cam.inference.ChunkSizer`).
    ``optimize`` runs the masked forwards on a checked inference copy of the model (BatchNorm folded,
    activations and residual adds fused into the oneDNN convolutions, channels_last;
    :func:`~verification.cam.inference.inference_forward`), whose activation memory per row also caps the
    tuned chunk size. ``progress(done, total, msg)`` is called once per chunk, counting masked forwards;
    returning False raises CancelledError.
    """
    if chunk_size is not None:
        check_chunk(chunk_size, x)
    if mode not in ("exact", "fast"):
        raise InvalidInputError(f"mode must be 'exact' or 'fast', got {mode!r:.40}.")
    if weighting not in ("paper", "gradcam_lib"):
        raise InvalidInputError(f"weighting must be 'paper' or 'gradcam_lib', got {weighting!r:.40}.")
    if mode == "fast" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InvalidInputError(f"k must be a positive integer, got {k!r:.40}.")
    if select not in ("cluster", "variance", "gradcam"):
        raise InvalidInputError(f"select must be 'cluster', 'variance' or 'gradcam', got {select!r:.40}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed must be a whole number ≥ 0, got {seed!r:.40}.")
    module, xi = prepare(model, x, layer)
    n = xi.shape[0]
    topk = mode == "fast" and select != "cluster"
    cap = capture(module, xi, [layer], target, gradients=topk and select == "gradcam")
    acts = cap.activations[layer]
    n_channels, hw = acts.shape[1], (acts.shape[2], acts.shape[3])
    units = _unit_maps(acts)
    samples = [_Sample.of(units[i], acts[i]) for i in range(n)]
    scorer, is_prob = row_scorer(cap.target, cap.scores.classes, probability=weighting == "paper")

    # what each sample scores first, and how many masked forwards it may spend in all
    if mode == "exact":
        first = [torch.arange(len(s.value)) for s in samples]
        budget = [len(s.value) for s in samples]
    elif topk:
        chosen = _select_channels(acts, cap.gradients.get(layer), k, select).cpu()
        first = [torch.unique(s.owner[c][s.owner[c] >= 0]) for s, c in zip(samples, chosen)]
        budget = [len(f) for f in first]
    else:
        generator = torch.Generator().manual_seed(seed)
        first, budget = [], []
        for s in samples:
            m = len(s.value)
            budget.append(min(k, m))
            first.append(
                torch.arange(m) if m <= k else _kmeans_medoids(s.distinct.cpu(), math.ceil(k / 2), generator)
            )
    total = sum(budget)
    label = f"Score-CAM ({mode})"

    with eval_mode(module), torch.inference_mode():
        row_bytes: int | None = None
        if optimize:
            probe, reference = pad_rows(module, xi[:1]), pad_rows(module, cap.output[:1])
            whole, path, row_bytes = inference_forward(module, probe, reference)
        else:
            whole, path = (lambda t: forward_output(module, t)), "the model itself"

        def forward(t: Tensor) -> Tensor:  # in chunks of the batch sizes the model accepts
            return run_chunked(module, t, whole)

        chunks = ChunkSizer(limit_chunk(module, chunk_size), total, row_bytes)
        zero_in = torch.zeros((1, *xi.shape[1:]), dtype=xi.dtype, device=xi.device)
        zero_out = run_forward(forward, zero_in)
        # every sample shares the zero input: one forward, scored for each sample's target
        zero_value = scorer(zero_out.expand(n, *zero_out.shape[1:]), torch.arange(n))
        base = torch.zeros(n, dtype=torch.float64)
        if weighting == "paper":
            if baseline is None:
                base = zero_value.clone()
            else:
                base_in = torch.as_tensor(baseline, dtype=xi.dtype, device=xi.device).expand(xi.shape)
                base = scorer(run_forward(forward, base_in.contiguous()), torch.arange(n))
        stream = _Stream(forward, xi, hw, align_corners, scorer, chunks, progress, total, label)
        report(progress, 0, total, f"{label}: {total} masked forwards")
        stream.score(samples, first)
        if mode == "fast" and not topk:
            for r in range(_ROUNDS):
                picks = []
                for s, b in zip(samples, budget):
                    left = b - int(s.scored.sum())
                    if left <= 0:
                        picks.append(torch.zeros(0, dtype=torch.long))
                        continue
                    key = torch.log(s.value) if is_prob else s.value
                    key = torch.nan_to_num(key, nan=-math.inf)
                    picks.append(_next_picks(s, key, math.ceil(left / (_ROUNDS - r))))
                stream.score(samples, picks)

    # per-channel scorer values; `known` marks the channels that have one (top-k leaves the rest at weight 0)
    values = torch.zeros((n, n_channels), dtype=torch.float64)
    known = torch.zeros((n, n_channels), dtype=torch.bool)
    for i, s in enumerate(samples):
        owner = s.owner.cpu()
        # a zero-length value vector (every channel constant) still indexes: append one unused NaN
        value = torch.cat([s.value.cpu(), torch.tensor([math.nan], dtype=torch.float64)])
        if mode == "fast" and not topk and bool(s.scored.any()):
            # unscored masks take their nearest scored neighbour's score
            value[:-1] = value[:-1][_nearest_scored(s).cpu()]
        constant = owner < 0
        per_channel = value[torch.where(constant, len(value) - 1, owner)]
        values[i] = torch.where(constant, zero_value[i].cpu(), per_channel)
        known[i] = constant | torch.isfinite(per_channel)
        if topk:
            known[i] &= ~constant | torch.isin(torch.arange(n_channels), chosen[i])
    if weighting == "gradcam_lib":
        weights = torch.softmax(values.masked_fill(~known, -math.inf), dim=1)
    else:
        weights = torch.where(known, values - base[:, None].cpu(), 0.0)
    raw = torch.einsum("nk,nkhw->nhw", weights.float().to(acts.device), acts.float())
    prov = {
        "mode": mode,
        "weighting": weighting,
        "select": select if mode == "fast" else "all",
        "channels_total": str(n_channels),
        "channels_scored": _span(budget),
        "distinct_masks": _span([len(s.value) for s in samples]),
        "masked_forwards": str(total),
        "chunk_size": chunks.describe(),
        "forward": path,
        "mask_upsampling": f"bilinear align_corners={align_corners}",
    }
    if mode == "fast" and not topk:
        prov["seed"] = str(seed)
    if weighting == "paper":
        prov["baseline"] = _BASELINE_NOTE if baseline is None else "caller-supplied tensor"
        if is_prob:
            # the baseline already scores the class near certainty: every weight is at most 1 − p_b, so the
            # map carries (almost) no evidence; say so rather than let a noise map pass for an explanation
            saturated = torch.nonzero(base >= SATURATED_BASELINE).flatten().tolist()
            if saturated:
                prov["saturated_baseline"] = ",".join(str(i) for i in saturated)
    return make_result(method="scorecam", layer=layer, cap=cap, raw=raw, normalize=normalize, provenance=prov)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if den == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float((a * b).sum() / den)


def fast_fidelity(
    model: ModelLike,
    x: Tensor,
    layer: str,
    target: TargetSpec = None,
    *,
    weighting: Weighting = "paper",
    k: int = 64,
    select: Select = "cluster",
    chunk_size: int | None = None,
    exact: CamResult | None = None,
    progress: Progress | None = None,
) -> float:
    """Pearson correlation of fast and exact Score-CAM maps (input size, normalised), mean over the batch.

    Pass an already computed exact result as ``exact`` to avoid computing it again.
    """
    if exact is None:
        exact = score_cam(
            model, x, layer, target, weighting=weighting, chunk_size=chunk_size, progress=progress
        )
    fast = score_cam(
        model,
        x,
        layer,
        target,
        mode="fast",
        weighting=weighting,
        k=k,
        select=select,
        chunk_size=chunk_size,
        progress=progress,
    )
    return float(np.mean([_pearson(e, f) for e, f in zip(exact.maps, fast.maps)]))
