"""Faithfulness and sanity checks of attention maps.

* **Deletion / insertion** (Petsiuk et al. 2018, RISE): pixels are removed from the image (replaced by a
  baseline) — or added to the baseline — in decreasing order of the map, in ``steps`` equal steps; the class
  score after each step forms a curve whose area (trapezoid over the fraction of pixels, in [0, 1] for a
  probability score) summarises it. A faithful map gives a low deletion area and a high insertion area. All
  perturbed inputs of a batch go through the model in bounded chunks, never one forward per step per image.
* **Cascading parameter randomisation** (Adebayo et al. 2018): the layers of a deep copy of the model are
  re-initialised one group at a time from the output side, and the map is recomputed after each step; a map
  that stays similar to the original (SSIM, Spearman rank correlation) does not depend on what the model
  learned. The caller's model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from verification.cam.concurrency import exclusive
from verification.cam.modules import as_module
from verification.cam.targets import TargetSpec
from verification.errors import ShapeError
from verification.io.records import LoadedModel
from verification.metrics.functional import pearson, ssim

Baseline = Literal["blur", "zero", "mean"] | float


def _baseline(x: Tensor, baseline: Baseline) -> Tensor:
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if baseline == "blur":
        # Gaussian blur, σ = min(H, W) / 45 (5 px at 224), separable with edge padding: it removes detail
        # while keeping the image's tones.
        sigma = max(min(x.shape[-2:]) / 45.0, 0.5)
        r = int(np.ceil(3 * sigma))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        c = x.shape[1]
        y = F.pad(x, (r, r, r, r), mode="replicate")
        y = F.conv2d(y, k.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(y, k.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    if isinstance(baseline, int | float):
        return torch.full_like(x, float(baseline))
    raise ValueError(f"baseline must be 'blur', 'zero', 'mean' or a number, got {baseline!r}")


@dataclass(frozen=True)
class PerturbationCurves:
    """``fractions`` (S+1,) of pixels perturbed; ``deletion`` / ``insertion`` (N, S+1) class scores;
    ``deletion_auc`` / ``insertion_auc`` (N,) trapezoid areas over the fractions; ``targets`` (N,)."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    targets: np.ndarray


def _scores(module: nn.Module, x: Tensor, targets: Tensor, score: str, task: str | None = None) -> Tensor:
    from verification.cam.chunking import run_chunked

    logits = run_chunked(module, x, module)  # in batch sizes the model accepts
    if logits.ndim != 2:
        raise ShapeError("deletion/insertion needs a classifier with (N, K) outputs")
    if score == "prob":  # a multi-label model's labels are independent: each its own sigmoid
        vals = logits.sigmoid() if task == "multilabel" else logits.softmax(1)
    else:
        vals = logits
    return vals.gather(1, targets[:, None]).squeeze(1)


@exclusive
def deletion_insertion(
    model: nn.Module | LoadedModel,
    x: Tensor,
    maps: np.ndarray | Tensor,
    *,
    target: int | Sequence[int] | None = None,
    steps: int = 20,
    baseline: Baseline = "blur",
    score: Literal["prob", "logit"] = "prob",
    chunk: int = 64,
) -> PerturbationCurves:
    """Deletion and insertion curves of ``maps`` (N, H, W) (resized to the input if needed) for inputs ``x``
    (N, C, H, W). ``target``: None → each input's predicted class. Ties in the map are broken by pixel
    order (stable sort), so the curves are deterministic."""
    module = as_module(model)
    if x.ndim != 4:
        raise ShapeError(f"expected inputs (N, C, H, W), got {tuple(x.shape)}")
    n, _, h, w = x.shape
    m = torch.as_tensor(maps, dtype=torch.float32)
    m = m[None] if m.ndim == 2 else m
    if m.shape[0] != n:
        raise ShapeError(f"{m.shape[0]} maps for {n} inputs")
    if tuple(m.shape[1:]) != (h, w):
        m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    from verification.cam.layers import eval_mode

    with eval_mode(module):
        if target is None:
            with torch.inference_mode():
                from verification.cam.chunking import run_chunked

                tgt = run_chunked(module, x, module).argmax(1)
        else:
            tgt = torch.as_tensor([target] * n if isinstance(target, int) else list(target), dtype=torch.long)
        base = _baseline(x, baseline)
        order = torch.argsort(-m.reshape(n, -1), dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(h * w).expand(n, -1).contiguous())
        counts = torch.round(torch.linspace(0, h * w, steps + 1)).long()
        rank = rank.reshape(n, 1, h, w)
        total = 2 * (steps + 1) * n  # (deletion | insertion) × step × image, built chunk by chunk
        out = []
        with torch.inference_mode():
            for s in range(0, total, chunk):
                idx = torch.arange(s, min(s + chunk, total))
                kind, k, i = idx // ((steps + 1) * n), (idx // n) % (steps + 1), idx % n
                top = (rank[i] < counts[k].reshape(-1, 1, 1, 1)).to(x.dtype)  # first counts[k] pixels
                keep = torch.where((kind == 0).reshape(-1, 1, 1, 1), 1 - top, top)
                batch = x[i] * keep + base[i] * (1 - keep)
                out.append(_scores(module, batch, tgt[i], score, getattr(model, "task", None)))
        vals = torch.cat(out).reshape(2, steps + 1, n).permute(0, 2, 1).numpy()
    frac = (counts.double() / (h * w)).numpy()
    dele, ins = vals[0].astype(np.float64), vals[1].astype(np.float64)
    return PerturbationCurves(
        fractions=frac,
        deletion=dele,
        insertion=ins,
        deletion_auc=np.trapezoid(dele, frac, axis=1),
        insertion_auc=np.trapezoid(ins, frac, axis=1),
        targets=tgt.numpy(),
    )


# ------------------------------------------------------------------------------------------ randomisation
@dataclass(frozen=True)
class RandomizationResult:
    """``steps[k]``: the module group randomised at step k (cumulative, from the output side);
    ``ssim`` / ``spearman`` (S, N): similarity of the map after step k with the original map;
    ``maps`` (S, N, H, W) the maps after each step; ``original`` (N, H, W)."""

    steps: tuple[str, ...]
    ssim: np.ndarray
    spearman: np.ndarray
    maps: np.ndarray
    original: np.ndarray


def parameter_groups(module: nn.Module, depth: int = 2) -> list[str]:
    """Dotted-name prefixes (``depth`` components) of the modules that own parameters, from the output side
    (reverse registration order, which is forward order for sequential models)."""
    groups: list[str] = []
    for name, sub in module.named_modules():
        if name and any(True for _ in sub.parameters(recurse=False)):
            prefix = ".".join(name.split(".")[:depth])
            if prefix not in groups:
                groups.append(prefix)
    return groups[::-1]


def reinit(sub: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``sub`` (recursively) with seeded N(0, σ²), σ from the fan-in
    (Kaiming-like) for weights, zero for biases and norm shifts, one for norm scales."""
    for name, p in sub.named_parameters():
        with torch.no_grad():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias" or p.ndim == 0:
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) * (2.0 / fan_in) ** 0.5)


def _spearman(a: Tensor, b: Tensor) -> np.ndarray:
    """Batched Spearman rank correlation of flattened maps (ties ranked by position)."""

    def ranks(t: Tensor) -> Tensor:
        flat = t.reshape(t.shape[0], -1)
        r = torch.empty_like(flat)
        order = torch.argsort(flat, dim=1, stable=True)
        r.scatter_(1, order, torch.arange(flat.shape[1], dtype=flat.dtype).expand_as(flat).contiguous())
        return r.reshape(t.shape)

    return pearson(ranks(a), ranks(b)).values


@exclusive
def cascading_randomization(
    model: nn.Module | LoadedModel,
    x: Tensor,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    target: int | Sequence[int] | None = None,
    depth: int = 2,
    max_steps: int | None = None,
    seed: int = 0,
) -> RandomizationResult:
    """Randomise parameter groups (:func:`parameter_groups`) of a deep copy cumulatively from the output side
    and recompute the map after each step; ``target`` None → the original model's predicted classes, kept
    fixed through the steps. Returns the similarity of every step's map with the original one."""
    from verification.cam import compute_cams

    original_module = as_module(model)
    first = compute_cams(original_module, x, methods=(method,), layers=layer, target=target)[0]
    fixed_target: TargetSpec = list(first.targets)
    used_layer = first.layer
    clone = copy.deepcopy(original_module)
    groups = parameter_groups(clone, depth)[: max_steps if max_steps is not None else None]
    named = dict(clone.named_modules())
    gen = torch.Generator().manual_seed(seed)
    maps, names = [], []
    for g in groups:
        reinit(named[g], gen)
        res = compute_cams(clone, x, methods=(method,), layers=used_layer, target=fixed_target)[0]
        maps.append(res.maps)
        names.append(g)
    orig = torch.from_numpy(first.maps.astype(np.float64))
    stack = np.stack(maps) if maps else np.zeros((0, *first.maps.shape), np.float32)
    ss = (
        np.stack([ssim(torch.from_numpy(m.astype(np.float64)), orig).values for m in stack])
        if maps
        else stack
    )
    sp = np.stack([_spearman(torch.from_numpy(m.astype(np.float64)), orig) for m in stack]) if maps else stack
    return RandomizationResult(tuple(names), ss, sp, stack, first.maps)
