"""Pixel attributions through captum, returned as :class:`CamResult` records with layer ``"input"``.

* ``"saliency"`` (Simonyan et al. 2014): ``|∂y/∂x|`` (captum ``Saliency``).
* ``"integrated_gradients"`` (Sundararajan et al. 2017): ``(x − x_b) ⊙ ∫ ∂y/∂x(x_b + α(x − x_b)) dα`` with
  ``n_steps`` (**default** 32, Gauss-Legendre as captum) and a black baseline ``x_b`` (captum
  ``IntegratedGradients``); its completeness gap ``Σ attr − (y(x) − y(x_b))`` goes into the provenance.
* ``"occlusion"`` (Zeiler & Fergus 2014): the drop of ``y`` when a window is replaced by the baseline,
  averaged over the windows covering each pixel (captum ``Occlusion``); **default** window
  ``max(1, round(min(H, W) / 14))`` pixels (16 at 224) over all channels, stride half the window.

Each attribution (N, C, H, W) becomes a map ``raw = Σ_c |attr|`` (N, H, W), then the CAM post-processing
(ReLU — a no-op here —, per-map min-max to [0, 1], constant maps flagged). ``y`` is the same target score
as for the CAMs (the class logit by default; segmentation and custom targets work through the same Target).

**Black baseline**: for a ``LoadedModel`` the normalised value of a black pixel, ``(0 − mean) / std`` per
channel; for a bare ``nn.Module`` (normalisation unknown) the zero tensor. Pass ``baseline=`` a number or a
tensor to choose another.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from verification.cam.capture import Capture, capture
from verification.cam.chunking import run_chunked
from verification.cam.concurrency import exclusive
from verification.cam.layers import eval_mode, model_device_dtype
from verification.cam.methods import METHODS, list_methods, option_names, register_method
from verification.cam.modules import ModelLike, as_module
from verification.cam.perturb import check_float_batch, make_result, run_forward
from verification.cam.progress import Progress, report
from verification.cam.records import CamResult
from verification.cam.targets import Target, TargetSpec, output_tensor, task_target

__all__ = [
    "ATTRIBUTION_METHODS",
    "compute_attribution",
    "integrated_gradients",
    "occlusion",
    "occlusion_window",
    "saliency",
]

AttributionMethod = Literal["saliency", "integrated_gradients", "occlusion"]
Baseline = str | float | Tensor
"""A baseline input: "black" (0 in pixel space, through the model's mean / std), a constant, or a tensor."""


def occlusion_window(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Default occlusion window and stride for an image of ``height`` × ``width`` (16 / 8 at 224)."""
    side = max(1, round(min(height, width) / 14))
    step = max(1, side // 2)
    return (side, side), (step, step)


def _black(model: ModelLike, x: Tensor, baseline: Baseline) -> tuple[Tensor, str]:
    if isinstance(baseline, Tensor):
        return baseline.to(device=x.device, dtype=x.dtype).expand_as(x).contiguous(), "caller-supplied tensor"
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline)), f"constant {float(baseline)}"
    if baseline != "black":
        raise ValueError(f"baseline must be 'black', a number or a tensor; got {baseline!r}.")
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    c = x.shape[1]
    if mean is not None and std is not None and len(mean) in (1, c) and len(std) in (1, c):
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).expand(c)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).expand(c)
        value = (0.0 - m) / s
        return value[None, :, None, None].expand_as(x).contiguous(), "black: (0 - mean) / std per channel"
    return torch.zeros_like(x), "black: zeros (model normalisation unknown)"


def _score_fn(
    target: Target, classes: tuple[int, ...]
) -> tuple[Callable[[Tensor], Tensor], list[int] | None]:
    """A function from the model output to what captum differentiates, and captum's ``target``.

    Class targets give a (rows, K) score matrix (column c = the target's score for class c), so captum picks
    each sample's own class however it expands the batch; targets without classes give (rows,) scores.
    """
    per_class = all(c >= 0 for c in classes) and hasattr(target, "classes")
    if not per_class:
        return (lambda out: target(out).scores), None

    def matrix(out: Tensor) -> Tensor:
        if out.ndim == 2 and target.kind == "logit":
            return out
        k = out.shape[1]
        cols = []
        for c in range(k):
            t = copy.copy(target)
            t.classes = c  # type: ignore[attr-defined]
            cols.append(t(out).scores)
        return torch.stack(cols, dim=1)

    return matrix, list(classes)


@dataclass
class _Run:
    """What every attribution method shares: the input on the model's device, captum's forward (the target's
    scores, counted for progress) and target, and the provenance the method adds to."""

    model: ModelLike
    x: Tensor
    forward: Callable[[Tensor], Tensor]
    target: list[int] | None
    provenance: dict[str, str]
    start: Callable[[int], None]  # the number of forward rows the method will run, before it runs them


def _attribute(
    method: str,
    model: ModelLike,
    x: Tensor,
    target: TargetSpec,
    progress: Progress | None,
    normalize: bool,
    body: Callable[[_Run], Tensor],
) -> CamResult:
    """Run ``body`` (one captum method: its attribution (N, C, H, W)) and make the map ``Σ_c |attr|``."""
    check_float_batch(x)
    module = as_module(model)
    target = task_target(model, target)  # a multi-label LoadedModel: label logits, sigmoid probabilities
    cap: Capture = capture(module, x, [], target, gradients=False)
    device, dtype = model_device_dtype(module)
    xi = x.detach().to(device=device, dtype=dtype).clone()
    score, captum_target = _score_fn(cap.target, cap.scores.classes)
    prov: dict[str, str] = {"library": "captum", "map": "sum over channels of |attribution|"}
    done, total = [0], [1]
    name = method.replace("_", " ")

    def start(rows: int) -> None:
        total[0] = rows
        report(progress, 0, rows, f"{name}: {rows} forward rows")

    def forward(inp: Tensor) -> Tensor:
        # in batch sizes the model accepts
        out = output_tensor(run_forward(lambda t: run_chunked(module, t, module), inp))
        done[0] = min(done[0] + int(inp.shape[0]), total[0])
        report(progress, done[0], total[0], f"{name}: {done[0]}/{total[0]} forward rows")
        return score(out)

    with eval_mode(module), torch.inference_mode(False), torch.enable_grad():
        attr = body(_Run(model, xi, forward, captum_target, prov, start))
    raw = attr.detach().abs().sum(dim=1).float()
    return make_result(method=method, layer="input", cap=cap, raw=raw, normalize=normalize, provenance=prov)


@register_method(
    "saliency", label="Gradient saliency", reference="Simonyan et al., ICLR-W 2014", kind="attribution"
)
@exclusive
def saliency(
    model: ModelLike,
    x: Tensor,
    target: TargetSpec = None,
    *,
    progress: Progress | None = None,
    normalize: bool = True,
) -> CamResult:
    """``|∂y/∂x|`` (captum ``Saliency``); one forward row per image."""
    from captum.attr import Saliency

    def body(run: _Run) -> Tensor:
        run.start(run.x.shape[0])
        return Saliency(run.forward).attribute(run.x.requires_grad_(True), target=run.target, abs=True)

    return _attribute("saliency", model, x, target, progress, normalize, body)


@register_method(
    "integrated_gradients",
    label="Integrated Gradients",
    reference="Sundararajan et al., ICML 2017",
    kind="attribution",
)
@exclusive
def integrated_gradients(
    model: ModelLike,
    x: Tensor,
    target: TargetSpec = None,
    *,
    progress: Progress | None = None,
    normalize: bool = True,
    baseline: Baseline = "black",
    n_steps: int = 32,
    internal_batch_size: int | None = 32,
) -> CamResult:
    """captum ``IntegratedGradients`` from ``baseline`` in ``n_steps``; the completeness gap goes into the
    provenance."""
    from captum.attr import IntegratedGradients

    def body(run: _Run) -> Tensor:
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}.")
        n = run.x.shape[0]
        run.start(n * n_steps + 2 * n)  # the path, then y(x) and y(x_b) for the completeness gap
        base, note = _black(run.model, run.x, baseline)
        attr, delta = IntegratedGradients(run.forward).attribute(
            run.x,
            baselines=base,
            target=run.target,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        run.provenance.update(
            {
                "baseline": note,
                "n_steps": str(n_steps),
                "completeness_gap_max": f"{float(delta.abs().max()):.6g}",
            }
        )
        return attr

    return _attribute("integrated_gradients", model, x, target, progress, normalize, body)


@register_method(
    "occlusion",
    label="Occlusion sensitivity",
    reference="Zeiler & Fergus, ECCV 2014",
    kind="attribution",
    needs_gradients=False,
)
@exclusive
def occlusion(
    model: ModelLike,
    x: Tensor,
    target: TargetSpec = None,
    *,
    progress: Progress | None = None,
    normalize: bool = True,
    baseline: Baseline = "black",
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    perturbations_per_eval: int = 16,
) -> CamResult:
    """captum ``Occlusion``: ``window`` / ``stride`` in pixels (**default** :func:`occlusion_window`)."""
    from captum.attr import Occlusion

    def body(run: _Run) -> Tensor:
        n, c, height, width = run.x.shape
        dw, ds = occlusion_window(height, width)
        win = (int(window[0]), int(window[1])) if window is not None else dw
        step = (int(stride[0]), int(stride[1])) if stride is not None else ds
        if min(*win, *step) < 1 or win[0] > height or win[1] > width:
            raise ValueError(
                f"occlusion window {win} / stride {step} do not fit an image of {height}x{width}."
            )
        nh = (height - win[0]) // step[0] + 1
        nw = (width - win[1]) // step[1] + 1
        run.start(n + n * nh * nw)
        base, note = _black(run.model, run.x, baseline)
        attr = Occlusion(run.forward).attribute(
            run.x,
            sliding_window_shapes=(c, *win),
            strides=(c, *step),
            baselines=base,
            target=run.target,
            perturbations_per_eval=perturbations_per_eval,
        )
        run.provenance.update(
            {"baseline": note, "window": f"{win[0]}x{win[1]}", "stride": f"{step[0]}x{step[1]}"}
        )
        return attr

    return _attribute("occlusion", model, x, target, progress, normalize, body)


ATTRIBUTION_METHODS: tuple[str, ...] = tuple(list_methods("attribution"))


@exclusive
def compute_attribution(
    model: ModelLike,
    x: Tensor,
    method: AttributionMethod | str = "saliency",
    target: TargetSpec = None,
    *,
    progress: Progress | None = None,
    normalize: bool = True,
    baseline: Baseline = "black",
    n_steps: int = 32,
    internal_batch_size: int | None = 32,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    perturbations_per_eval: int = 16,
) -> CamResult:
    """Attribution maps of ``model`` for ``x`` (N, C, H, W) through captum; see the module docstring.

    ``target`` as for the CAMs (None → predicted class logit). ``progress(done, total, msg)`` counts the
    forward rows the method runs (returning False raises CancelledError). Options: ``n_steps`` and
    ``internal_batch_size`` (integrated gradients), ``window`` / ``stride`` in pixels and
    ``perturbations_per_eval`` (occlusion), ``baseline`` (IG and occlusion); each method takes the ones it
    uses. The method is looked up in the registry (:mod:`verification.cam.methods`, kind "attribution").
    """
    spec = METHODS.get(method) if isinstance(method, str) else None
    if spec is None or spec.kind != "attribution" or spec.fn is None:
        raise ValueError(
            f"Unknown attribution method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}."
        )
    given: dict[str, Any] = {
        "baseline": baseline,
        "n_steps": n_steps,
        "internal_batch_size": internal_batch_size,
        "window": window,
        "stride": stride,
        "perturbations_per_eval": perturbations_per_eval,
    }
    takes = option_names(spec.name)
    options = {k: v for k, v in given.items() if k in takes}
    return spec.fn(model, x, target, progress=progress, normalize=normalize, **options)
