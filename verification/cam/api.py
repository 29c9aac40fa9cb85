"""``compute_cams``: every requested CAM for a batch; the gradient family from one forward + one backward."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from verification.cam.capture import ADVICE_MODEL, Capture, capture, check_finite, check_input
from verification.cam.concurrency import exclusive
from verification.cam.layers import default_target_layer, resolve_layer_names
from verification.cam.methods import METHODS, get_method, list_methods, option_names, postprocess
from verification.cam.modules import ModelLike, as_module
from verification.cam.multiscale import Fuse, default_ms_layers, ms_gradcampp
from verification.cam.progress import Progress
from verification.cam.records import CamResult, base_provenance
from verification.cam.targets import TargetSpec, task_target
from verification.errors import InvalidInputError
from verification.options import check_keyword_options


def _check_methods(methods: Any) -> list[str]:
    """One method name or a sequence of them; each registered. InvalidInputError otherwise."""
    names = [methods] if isinstance(methods, str) else methods
    if not isinstance(names, Sequence) or not all(isinstance(m, str) for m in names):
        raise InvalidInputError(f"methods must be method names, got {type(methods).__name__}")
    if not names:
        raise InvalidInputError(f"no CAM method requested; choose from {', '.join(list_methods())}")
    unknown = [m[:40] for m in names if m not in METHODS]
    if unknown:
        raise InvalidInputError(
            f"unknown CAM method(s) {unknown[:5]}; available: {', '.join(list_methods())}"
        )
    return list(dict.fromkeys(names))


def _check_layers(layers: Any, what: str = "layers") -> None:
    if layers is None or isinstance(layers, str):
        return
    if not isinstance(layers, Sequence) or not layers or not all(isinstance(n, str) for n in layers):
        raise InvalidInputError(f"{what} must be a layer name or a non-empty list of layer names")


def _check_options(options: object) -> dict[str, dict[str, Any]]:
    """Per-method keyword options: registered methods only, and only keywords the method takes."""
    return check_keyword_options(options, kind="method", known=METHODS, allowed=option_names)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32, copy=False)


@exclusive
def compute_cams(
    model: ModelLike,
    x: Tensor,
    *,
    methods: Sequence[str] = ("gradcam",),
    layers: Sequence[str] | str | None = None,
    target: TargetSpec = None,
    normalize: bool = True,
    ms_layers: Sequence[str] | None = None,
    ms_fuse: Fuse = "mean",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
    eval: bool = True,
) -> list[CamResult]:
    """CAMs of ``model`` for the batch ``x`` (N, C, H, W): one :class:`CamResult` per (method, layer).

    ``methods``: any of ``list_methods()`` — "gradcam", "gradcampp", "xgradcam", "hirescam", "layercam",
    "eigencam" are derived from one capture (one forward, one ``autograd.grad`` for all layers);
    "ms_gradcampp" adds its depths (``ms_layers``, **default** the last three stage outputs) to that same
    capture and gives one fused result; "scorecam" / "ablationcam" (kind "perturbation") run
    :mod:`verification.cam.scorecam` / :mod:`verification.cam.ablation` per layer; "saliency",
    "integrated_gradients", "occlusion" (kind "attribution") run :mod:`verification.cam.attribution` once,
    at the input (layer "input"). Every method is dispatched from the registry
    (:mod:`verification.cam.methods`); ``normalize`` applies to every kind.
    ``layers``: dotted module names; None → :func:`default_target_layer`. ``target``: None (each sample's
    predicted class logit; the segmentation target for (N, C, H, W) outputs), a class index, one index per
    sample, or a Target from :mod:`verification.cam.targets`. ``options``: per-method keyword options, e.g.
    ``{"gradcampp": {"eps": 1e-6}, "scorecam": {"mode": "fast", "k": 64}}``.
    ``progress(done, total, message)`` is forwarded to the perturbation methods
    (return False from it to cancel).

    Hostile input gets typed errors before the model runs (:class:`~verification.errors.ShapeError` for an
    empty batch or a non-(N, C, H, W) input, :class:`~verification.errors.InvalidInputError` for unknown
    methods, options or targets); NaN or ±inf in the input, the model's output, activations, gradients or a
    map raise :class:`~verification.errors.NonFiniteError` naming the samples. Safe to call from several
    threads on one shared model (:mod:`verification.cam.concurrency`).
    """
    module = as_module(model)
    check_input(x)
    target = task_target(model, target)  # a multi-label LoadedModel: label logits, sigmoid probabilities
    methods = _check_methods(methods)
    _check_layers(layers)
    _check_layers(ms_layers, "ms_layers")
    kwargs: dict[str, Any] = {
        "methods": methods,
        "layers": layers,
        "target": target,
        "normalize": normalize,
        "ms_layers": ms_layers,
        "ms_fuse": ms_fuse,
        "options": _check_options(options),
        "progress": progress,
        "eval": eval,
    }
    # a model that accepts only some batch sizes (a torch.export program with a static batch) is run in
    # chunks it accepts by every method (verification.cam.chunking): no per-method fallback here
    return _compute(model, module, x, **kwargs)


def _compute(
    model: ModelLike,
    module: nn.Module,
    x: Tensor,
    *,
    methods: Sequence[str],
    layers: Sequence[str] | str | None,
    target: TargetSpec,
    normalize: bool,
    ms_layers: Sequence[str] | None,
    ms_fuse: Fuse,
    options: Mapping[str, Mapping[str, Any]] | None,
    progress: Progress | None,
    eval: bool,
) -> list[CamResult]:
    methods = list(dict.fromkeys(methods))
    specs = {m: get_method(m) for m in methods}
    options = dict(options or {})
    input_shape = tuple(int(s) for s in x.shape[1:])
    if all(specs[m].kind == "attribution" for m in methods):
        layer_names = []  # attributions are computed at the input: no layer to find
    elif layers is None:
        layer_names = [default_target_layer(module, input_shape)]
    else:
        layer_names = resolve_layer_names(module, [layers] if isinstance(layers, str) else list(layers))
    capture_methods = [m for m in methods if specs[m].kind == "capture"]
    want_ms = "ms_gradcampp" in methods
    ms_names: list[str] = []
    if want_ms:
        ms_names = (
            resolve_layer_names(module, list(ms_layers))
            if ms_layers
            else default_ms_layers(module, input_shape)
        )
    cap_layers = list(dict.fromkeys((layer_names if capture_methods else []) + ms_names))

    results: list[CamResult] = []
    cap: Capture | None = None
    elapsed = 0.0
    if cap_layers:
        needs_grad = want_ms or any(specs[m].needs_gradients for m in capture_methods)
        t0 = time.perf_counter()
        cap = capture(module, x, cap_layers, target, gradients=needs_grad, eval=eval)
        elapsed = time.perf_counter() - t0
    base = base_provenance()
    base.update(
        {
            "model": type(module).__name__,
            "input_shape": "x".join(map(str, x.shape)),
            "normalize": str(normalize),
        }
    )
    if hasattr(model, "content_hash"):
        base["model_hash"] = str(model.content_hash)

    for method in methods:
        spec = specs[method]
        if spec.kind in ("perturbation", "attribution"):
            results.extend(_run_own(method, model, x, layer_names, target, normalize, options, progress))
            continue
        assert cap is not None
        if spec.kind == "multiscale":
            pp = get_method("gradcampp")
            assert pp.fn is not None
            pp_opts = {**pp.defaults, **dict(options.get("gradcampp", {}))}
            raws = [pp.fn(cap.activations[n], cap.gradients[n], **pp_opts) for n in ms_names]
            fuse = options.get("ms_gradcampp", {}).get("fuse", ms_fuse)
            # raw is the fused map at input size: each depth was already ReLU'd, upsampled and normalised
            fused = ms_gradcampp(raws, cap.input_size, fuse)
            extra = {
                "fuse": str(fuse),
                "depths": ",".join(ms_names),
                **{k: repr(v) for k, v in pp_opts.items()},
            }
            results.append(
                _record(cap, method, "+".join(ms_names), fused, normalize, base, elapsed, True, extra)
            )
            continue
        opts = {**spec.defaults, **dict(options.get(method, {}))}
        for name in layer_names:
            a = cap.activations[name]
            g = cap.gradients.get(name) if spec.needs_gradients else None
            assert spec.fn is not None
            raw = spec.fn(a, g, **opts)
            extra = {k: repr(v) for k, v in opts.items()}
            extra["calls"] = str(cap.calls[name])
            results.append(
                _record(cap, method, name, raw, normalize, base, elapsed, spec.needs_gradients, extra)
            )
    return results


def _record(
    cap: Capture,
    method: str,
    layer: str,
    raw: Tensor,
    normalize: bool,
    base: dict[str, str],
    elapsed: float,
    target_dependent: bool,
    extra: Mapping[str, str],
) -> CamResult:
    check_finite(raw, f"the {method} map at {layer!r}", ADVICE_MODEL)
    maps, constant = postprocess(raw, cap.input_size, normalize)
    empty = cap.scores.empty.to(maps.device)
    if target_dependent and bool(empty.any()):
        maps = torch.where(empty[:, None, None], torch.zeros_like(maps), maps)
        raw = torch.where(empty[:, None, None], torch.zeros_like(raw), raw)
        constant = constant | empty
    out = cap.output
    logits = out.mean(dim=(2, 3)) if out.ndim == 4 else out.reshape(out.shape[0], -1)
    prov = dict(base)
    prov.update(
        {
            "method": method,
            "layer": layer,
            "target": repr(cap.target),
            "capture_seconds": f"{elapsed:.6f}",
        }
    )
    if bool(empty.any()):
        prov["empty_target"] = ",".join(str(i) for i in torch.nonzero(empty).flatten().tolist())
    prov.update({str(k): str(v) for k, v in extra.items()})
    return CamResult(
        method=method,
        layer=layer,
        raw=_np(raw),
        maps=_np(maps),
        targets=cap.scores.classes,
        target_kind=cap.target.kind,
        logits=_np(logits),
        probs=_np(cap.target.probabilities(out).reshape(out.shape[0], -1)),
        constant=constant.cpu().numpy().astype(bool),
        provenance=prov,
    )


def _run_own(
    method: str,
    model: ModelLike,
    x: Tensor,
    layer_names: Sequence[str],
    target: TargetSpec,
    normalize: bool,
    options: Mapping[str, Mapping[str, Any]],
    progress: Progress | None,
) -> list[CamResult]:
    """A method that runs its own passes, through its registered function: a perturbation method once per
    layer, an attribution once at the input."""
    spec = get_method(method)
    assert spec.fn is not None
    opts = {"normalize": normalize, **dict(options.get(method, {}))}
    if spec.kind == "attribution":
        return [spec.fn(model, x, target, progress=progress, **opts)]
    return [spec.fn(model, x, name, target, progress=progress, **opts) for name in layer_names]
