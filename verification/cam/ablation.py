"""Ablation-CAM (Desai & Ramaswamy 2020): weight each activation channel ``A[k]`` (N, K, h, w) of one layer by
how much the target score drops when that channel is set to zero, K extra forwards per image.

``w_k = (y − y_without_k) / |y|``, ``y`` the target score (the class logit by default), ``y_without_k`` the
score when channel k of the layer output is zero (paper). Dividing by ``|y|`` rather than ``y`` keeps the
sign of the weights when the target logit is negative (with ``y > 0``, the usual case, it is the paper's
formula); ``y == 0`` leaves the weights undivided. Both are recorded in the provenance.

Map ``Σ_k w_k A[k]`` (kept as ``raw``), then ReLU, bilinear upsampling to the input and min-max
normalisation (:func:`verification.cam.perturb.make_result`). Ablated forwards run in chunks of
``chunk_size`` (sample, channel) rows under ``torch.inference_mode()``, each row scored against its own
sample's target. Registered in :mod:`verification.cam.methods` (kind "perturbation") by the decorator below.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from verification.cam.capture import capture
from verification.cam.chunking import chunk_bounds, limit_chunk, pad_rows
from verification.cam.concurrency import exclusive, this_thread_only
from verification.cam.layers import eval_mode, first_tensor, replace_first_tensor
from verification.cam.methods import register_method
from verification.cam.modules import ModelLike
from verification.cam.perturb import check_chunk, forward_output, make_result, prepare, row_scorer
from verification.cam.progress import Progress, report
from verification.cam.records import CamResult
from verification.cam.targets import TargetSpec

__all__ = ["ablation_cam"]


@register_method(
    "ablationcam",
    label="Ablation-CAM",
    reference="Desai & Ramaswamy, WACV 2020",
    kind="perturbation",
    needs_gradients=False,
)
@exclusive
def ablation_cam(
    model: ModelLike,
    x: Tensor,
    layer: str,
    target: TargetSpec = None,
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
    check_chunk(chunk_size, x)
    module, xi = prepare(model, x, layer)
    n = xi.shape[0]
    cap = capture(module, xi, [layer], target, gradients=False)
    acts = cap.activations[layer]
    n_channels = acts.shape[1]
    y = cap.scores.scores.float().to(acts.device)
    rows_i = torch.arange(n, device=acts.device).repeat_interleave(n_channels)
    rows_k = torch.arange(n_channels, device=acts.device).repeat(n)
    total = rows_i.numel()
    ablated = torch.empty(total, dtype=torch.float32, device=acts.device)
    scorer, _ = row_scorer(cap.target, cap.scores.classes, probability=False)
    current: list[Tensor] = [rows_k[:0]]

    def zero_channel(_m: nn.Module, _i: object, output: Any) -> Any:
        t = first_tensor(output)
        if t is None:
            return None
        t = t.clone()
        t[torch.arange(t.shape[0], device=t.device), current[0]] = 0
        return replace_first_tensor(output, t)

    layer_module = dict(module.named_modules())[layer]
    handle = layer_module.register_forward_hook(this_thread_only(zero_channel))
    try:
        with eval_mode(module), torch.inference_mode():
            report(progress, 0, total, f"Ablation-CAM: {total} ablated forwards")
            for start, stop in chunk_bounds(module, total, chunk_size):
                ii = rows_i[start:stop]
                current[0] = pad_rows(module, rows_k[start:stop])  # padding rows: outputs dropped
                out = forward_output(module, pad_rows(module, xi[ii]))[: stop - start]
                ablated[start:stop] = scorer(out, ii)
                report(progress, stop, total, f"Ablation-CAM: {stop}/{total} ablated forwards")
    finally:
        handle.remove()

    denom = torch.where(y == 0, torch.ones_like(y), y.abs())
    weights = (y[:, None] - ablated.view(n, n_channels)) / denom[:, None]
    raw = torch.einsum("nk,nkhw->nhw", weights, acts.float())
    prov = {
        "ablation": "channel set to zero in the layer output",
        "normaliser": "|y| (y the target score; 1 where y == 0)",
        "chunk_size": str(limit_chunk(module, chunk_size)),
        "zero_target_score": str(bool((y == 0).any())),
    }
    return make_result(
        method="ablationcam", layer=layer, cap=cap, raw=raw, normalize=normalize, provenance=prov
    )
