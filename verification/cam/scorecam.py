"""Perturbation CAMs: Score-CAM (Wang et al. 2020) and Ablation-CAM (Desai & Ramaswamy 2020).

Both weight the activation channels ``A[k]`` (N, K, h, w) of one layer by what happens to the target score
when the model is run again, K extra forwards per image:

* Score-CAM: ``M_k = minmax(up(A[k]))`` (bilinear to the input size, min-max per channel; a constant channel
  gives an all-zero mask), score the masked input ``X ⊙ M_k``. Weightings:

  - ``"paper"`` (**default**): ``w_k = p_c(X ⊙ M_k) − p_c(X_b)``, ``p_c`` the softmax probability of the
    target class (the target's ``probabilities``), ``X_b`` the baseline input: **the all-zero tensor in the
    model's input space** (``X ⊙ 0``, the input under an all-zero mask; for a normalised model this is the
    dataset-mean image, not black pixels), or the tensor passed as ``baseline``. Wang et al. define the
    "increase of confidence" against a baseline ``X_b``; their reference code leaves it out (a constant
    shift of every weight by ``p_c(X_b)``, which changes the map). A constant channel then gets exactly
    ``w_k = 0``.
  - ``"gradcam_lib"``: pytorch-grad-cam's ``ScoreCAM``: ``w = softmax_k(y_c(X ⊙ M_k))`` across channels of the
    masked target logits.

* Ablation-CAM: ``w_k = (y − y_without_k) / |y|``, ``y`` the target logit, ``y_without_k`` the logit when
  channel k of the layer output is set to zero (paper). Dividing by ``|y|`` rather than ``y`` keeps the sign
  of the weights when the target logit is negative (with ``y > 0``, the usual case, it is the paper's
  formula); ``y == 0`` leaves the weights undivided. Both are recorded in the provenance.

Map ``Σ_k w_k A[k]`` (kept as ``raw``), then ReLU, bilinear upsampling to the input and min-max
normalisation. Masked copies are streamed in chunks of ``chunk_size`` (sample, channel) rows under
``torch.inference_mode()``; never more than ``chunk_size`` copies exist at once, rows of different samples
share a chunk but each is scored against its own sample's target.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from verification.cam.capture import Capture, capture
from verification.cam.layers import eval_mode, first_tensor, model_device_dtype, resolve_layer_names
from verification.cam.methods import postprocess
from verification.cam.progress import Progress, report
from verification.cam.records import CamResult, base_provenance
from verification.cam.targets import Target, output_tensor
from verification.errors import ModelForwardError, ShapeError

__all__ = ["ablation_cam", "fast_fidelity", "score_cam"]

Mode = Literal["exact", "fast"]
Weighting = Literal["paper", "gradcam_lib"]
Select = Literal["variance", "gradcam"]

_BASELINE_NOTE = "zeros: the all-zero input in the model's input space (X ⊙ 0)"


# ---------------------------------------------------------------------------------------------------------
# shared helpers (also used by verification.cam.attribution)


def _module_of(model: Any) -> nn.Module:
    """The ``nn.Module`` behind a ``LoadedModel`` or the module itself."""
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise TypeError(f"Expected an nn.Module or a LoadedModel, got {type(model).__name__}.")
    return module


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ShapeError(f"The input must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}.")
    if x.ndim != 4:
        raise ShapeError(f"The input must have shape (N, C, H, W); got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise ShapeError(f"The input must be a floating-point tensor; got dtype {x.dtype}.")
    if x.shape[0] == 0:
        raise ShapeError("The input batch is empty.")


def _forward(module: nn.Module, x: Tensor) -> Tensor:
    try:
        out = module(x)
    except Exception as err:
        raise ModelForwardError(f"The model failed on an input of shape {tuple(x.shape)}: {err}") from err
    return output_tensor(out)


def _row_scorer(
    target: Target, classes: tuple[int, ...], probability: bool
) -> Callable[[Tensor, Tensor], Tensor]:
    """Score rows of a chunk that may mix samples: ``scorer(output, sample_index) -> (rows,)``.

    Each row is scored against its own sample's class (a copy of the target with that class per row).
    ``probability`` scores the class probability (``target.probabilities``) instead of the target's own
    score. Targets without classes (custom callables, class -1) score every row with the target as given.
    """
    cls = torch.tensor(classes, dtype=torch.long)
    per_class = all(c >= 0 for c in classes) and hasattr(target, "classes")

    def scorer(out: Tensor, ii: Tensor) -> Tensor:
        rows = cls[ii.cpu()]
        if probability and per_class:
            probs = target.probabilities(out)
            return probs[torch.arange(out.shape[0], device=probs.device), rows.to(probs.device)].float()
        if per_class:
            t = copy.copy(target)
            t.classes = rows.tolist()  # type: ignore[attr-defined]
            return t(out).scores.float()
        return target(out).scores.float()

    return scorer


def _make_result(
    *,
    method: str,
    layer: str,
    cap: Capture,
    raw: Tensor,
    normalize: bool,
    provenance: dict[str, str],
) -> CamResult:
    maps, constant = postprocess(raw, cap.input_size, normalize)
    empty = cap.scores.empty.to(maps.device)
    if bool(empty.any()):
        # a segmentation target with no pixel above the threshold: an all-zero map, flagged
        maps = torch.where(empty[:, None, None], torch.zeros_like(maps), maps)
        raw = torch.where(empty[:, None, None], torch.zeros_like(raw), raw)
        constant = constant | empty
        provenance["empty_target"] = ",".join(str(i) for i in torch.nonzero(empty).flatten().tolist())
    out = cap.output
    logits = out.mean(dim=(2, 3)) if out.ndim == 4 else out.reshape(out.shape[0], -1)
    prov = base_provenance()
    prov.update({"method": method, "layer": layer, "target": repr(cap.target)})
    prov.update(provenance)
    return CamResult(
        method=method,
        layer=layer,
        raw=raw.detach().float().cpu().numpy(),
        maps=maps.detach().float().cpu().numpy(),
        targets=cap.scores.classes,
        target_kind=cap.target.kind,
        logits=logits.detach().float().cpu().numpy(),
        probs=cap.target.probabilities(out).reshape(out.shape[0], -1).float().cpu().numpy(),
        constant=constant.cpu().numpy().astype(bool),
        provenance=prov,
    )


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _check_chunk(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")


def _prepare(model: Any, x: Tensor, layer: str) -> tuple[nn.Module, Tensor]:
    _check_input(x)
    module = _module_of(model)
    resolve_layer_names(module, [layer])
    device, dtype = model_device_dtype(module)
    return module, x.detach().to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------
# Score-CAM


def _select_channels(acts: Tensor, grads: Tensor | None, k: int, select: Select) -> Tensor:
    """Top-k channel indices per sample (N, k), by spatial activation variance or by Grad-CAM weight."""
    if select == "variance":
        key = acts.flatten(2).var(dim=2, unbiased=False)
    elif select == "gradcam":
        if grads is None:
            raise ValueError("select='gradcam' needs the gradients of the capture pass.")
        key = grads.flatten(2).mean(dim=2)
    else:
        raise ValueError(f"select must be 'variance' or 'gradcam', got {select!r}.")
    return key.topk(min(k, acts.shape[1]), dim=1).indices


def score_cam(
    model: Any,
    x: Tensor,
    layer: str,
    target: Any = None,
    *,
    mode: Mode = "exact",
    weighting: Weighting = "paper",
    k: int = 64,
    select: Select = "variance",
    chunk_size: int = 32,
    progress: Progress | None = None,
    normalize: bool = True,
    baseline: Tensor | None = None,
    align_corners: bool = False,
) -> CamResult:
    """Score-CAM (Wang et al. 2020) at ``layer`` for ``x`` (N, C, H, W).

    ``mode="exact"`` scores every channel (K forwards per image, streamed); ``mode="fast"`` only the top ``k``
    channels per image by activation variance (``select="variance"``, **default**) or by Grad-CAM weight
    (``select="gradcam"``, one extra backward); the other channels get weight 0. ``weighting`` is ``"paper"``
    (baseline-subtracted class probability) or ``"gradcam_lib"`` (softmax across channels of the masked
    target scores); see the module docstring. ``target``: None (predicted class), a class, one class per
    sample or a Target of :mod:`verification.cam.targets`. ``align_corners`` is the convention for
    upsampling the masks (False as in Wang et al.'s code; pytorch-grad-cam uses True). ``progress(done,
    total, msg)`` is called once per chunk, counting masked forwards; returning False raises CancelledError.
    """
    _check_chunk(chunk_size)
    if mode not in ("exact", "fast"):
        raise ValueError(f"mode must be 'exact' or 'fast', got {mode!r}.")
    if weighting not in ("paper", "gradcam_lib"):
        raise ValueError(f"weighting must be 'paper' or 'gradcam_lib', got {weighting!r}.")
    if mode == "fast" and (not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if select not in ("variance", "gradcam"):
        raise ValueError(f"select must be 'variance' or 'gradcam', got {select!r}.")
    module, xi = _prepare(model, x, layer)
    n, _, height, width = xi.shape
    need_grad = mode == "fast" and select == "gradcam"
    cap = capture(module, xi, [layer], target, gradients=need_grad)
    acts = cap.activations[layer]
    n_channels = acts.shape[1]
    if mode == "exact":
        channels = torch.arange(n_channels, device=acts.device).expand(n, n_channels)
    else:
        channels = _select_channels(acts, cap.gradients.get(layer), k, select)
    per_sample = channels.shape[1]
    rows_i = torch.arange(n, device=acts.device).repeat_interleave(per_sample)
    rows_k = channels.reshape(-1)
    total = rows_i.numel()
    scores = torch.empty(total, dtype=torch.float32, device=acts.device)
    scorer = _row_scorer(cap.target, cap.scores.classes, probability=weighting == "paper")

    with eval_mode(module), torch.inference_mode():
        base = torch.zeros(n, device=acts.device)
        if weighting == "paper":
            if baseline is None:
                # every sample shares the zero baseline: one forward, scored for each sample's class
                out0 = _forward(module, torch.zeros((1, *xi.shape[1:]), dtype=xi.dtype, device=xi.device))
                base_out = out0.expand(n, *out0.shape[1:])
            else:
                base_in = torch.as_tensor(baseline, dtype=xi.dtype, device=xi.device).expand(xi.shape)
                base_out = _forward(module, base_in.contiguous())
            base = scorer(base_out, torch.arange(n))
        report(progress, 0, total, f"Score-CAM ({mode}): {total} masked forwards")
        for start, stop in _chunks(total, chunk_size):
            ii, kk = rows_i[start:stop], rows_k[start:stop]
            masks = acts[ii, kk][:, None].to(xi.dtype)
            if tuple(masks.shape[-2:]) != (height, width):
                masks = F.interpolate(
                    masks, size=(height, width), mode="bilinear", align_corners=align_corners
                )
            flat = masks.flatten(1)
            lo = flat.min(dim=1).values[:, None, None, None]
            span = flat.max(dim=1).values[:, None, None, None] - lo
            # a constant channel gives an all-zero mask (never a division by zero)
            masks = torch.where(span > 0, (masks - lo) / torch.where(span > 0, span, 1.0), 0.0)
            out = _forward(module, xi[ii] * masks)
            scores[start:stop] = scorer(out, ii) - base[ii]
            del masks, out
            report(progress, stop, total, f"Score-CAM ({mode}): {stop}/{total} masked forwards")

    weights_sel = scores.view(n, per_sample)
    if weighting == "gradcam_lib":
        weights_sel = torch.softmax(weights_sel, dim=1)
    weights = torch.zeros((n, n_channels), dtype=torch.float32, device=acts.device)
    weights.scatter_(1, channels, weights_sel)
    raw = torch.einsum("nk,nkhw->nhw", weights, acts.float())
    prov = {
        "mode": mode,
        "weighting": weighting,
        "channels_scored": str(per_sample),
        "channels_total": str(n_channels),
        "select": select if mode == "fast" else "all",
        "chunk_size": str(chunk_size),
        "mask_upsampling": f"bilinear align_corners={align_corners}",
    }
    if weighting == "paper":
        prov["baseline"] = _BASELINE_NOTE if baseline is None else "caller-supplied tensor"
    return _make_result(
        method="scorecam", layer=layer, cap=cap, raw=raw, normalize=normalize, provenance=prov
    )


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if den == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float((a * b).sum() / den)


def fast_fidelity(
    model: Any,
    x: Tensor,
    layer: str,
    target: Any = None,
    *,
    weighting: Weighting = "paper",
    k: int = 64,
    select: Select = "variance",
    chunk_size: int = 32,
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


# ---------------------------------------------------------------------------------------------------------
# Ablation-CAM


def ablation_cam(
    model: Any,
    x: Tensor,
    layer: str,
    target: Any = None,
    *,
    chunk_size: int = 32,
    progress: Progress | None = None,
    normalize: bool = True,
) -> CamResult:
    """Ablation-CAM (Desai & Ramaswamy 2020): ``w_k = (y − y_without_k) / |y|``, map ``Σ_k w_k A[k]``.

    Channel k is ablated by a forward hook that sets it to zero in the layer's output, ``chunk_size``
    (sample, channel) rows per batched forward. ``y`` is the target's score (the class logit by default).
    See the module docstring for ``|y|``.
    """
    _check_chunk(chunk_size)
    module, xi = _prepare(model, x, layer)
    n = xi.shape[0]
    cap = capture(module, xi, [layer], target, gradients=False)
    acts = cap.activations[layer]
    n_channels = acts.shape[1]
    y = cap.scores.scores.float().to(acts.device)
    rows_i = torch.arange(n, device=acts.device).repeat_interleave(n_channels)
    rows_k = torch.arange(n_channels, device=acts.device).repeat(n)
    total = rows_i.numel()
    ablated = torch.empty(total, dtype=torch.float32, device=acts.device)
    scorer = _row_scorer(cap.target, cap.scores.classes, probability=False)
    current: list[Tensor] = [rows_k[:0]]

    def zero_channel(_m: nn.Module, _i: object, output: Any) -> Any:
        t = first_tensor(output)
        if t is None:
            return None
        t = t.clone()
        t[torch.arange(t.shape[0], device=t.device), current[0]] = 0
        if isinstance(output, Tensor):
            return t
        items = list(output)
        items[next(i for i, v in enumerate(items) if isinstance(v, Tensor))] = t
        return type(output)(items) if isinstance(output, list) else tuple(items)

    layer_module = dict(module.named_modules())[layer]
    handle = layer_module.register_forward_hook(zero_channel)
    try:
        with eval_mode(module), torch.inference_mode():
            report(progress, 0, total, f"Ablation-CAM: {total} ablated forwards")
            for start, stop in _chunks(total, chunk_size):
                ii = rows_i[start:stop]
                current[0] = rows_k[start:stop]
                ablated[start:stop] = scorer(_forward(module, xi[ii]), ii)
                report(progress, stop, total, f"Ablation-CAM: {stop}/{total} ablated forwards")
    finally:
        handle.remove()

    denom = torch.where(y == 0, torch.ones_like(y), y.abs())
    weights = (y[:, None] - ablated.view(n, n_channels)) / denom[:, None]
    raw = torch.einsum("nk,nkhw->nhw", weights, acts.float())
    prov = {
        "ablation": "channel set to zero in the layer output",
        "normaliser": "|y| (y the target score; 1 where y == 0)",
        "chunk_size": str(chunk_size),
        "zero_target_score": str(bool((y == 0).any())),
    }
    return _make_result(
        method="ablationcam", layer=layer, cap=cap, raw=raw, normalize=normalize, provenance=prov
    )
