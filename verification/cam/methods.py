"""The Grad-CAM family as closed-form functions of one capture (A, g), and the post-processing of maps.

Each method maps activations ``A`` (N, C, h, w) and gradients ``g`` (same shape, None for gradient-free
methods) to a raw map (N, h, w) before ReLU; everything is vectorised over the batch. Definitions follow
``shared/design/METHODS.md`` §1.

This module holds the one registry of every map method, of every kind, with its label and what runs it:

* ``"capture"``: ``fn(A, g, **options) -> raw (N, h, w)`` on one shared capture (registered here);
* ``"multiscale"``: Grad-CAM++ fused over depths from that same capture (the engine runs it; registered here);
* ``"perturbation"``: ``fn(model, x, layer, target, *, progress, **options) -> CamResult``, once per layer
  (Score-CAM, Ablation-CAM; registered in :mod:`verification.cam.scorecam` and
  :mod:`verification.cam.ablation`);
* ``"attribution"``: ``fn(model, x, target, *, progress, **options) -> CamResult`` at the input, layer
  ``"input"`` (captum; registered in :mod:`verification.cam.attribution`).

Methods are registered by decorator (``@register_method("gradcam", label=..., reference=...)``) in the module
that implements them, listed with :func:`list_methods` and run by :func:`verification.cam.compute_cams`; the
CLI and the dashboard list them from here. Importing :mod:`verification.cam` loads every registering module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from verification.errors import InvalidInputError

MethodFn = Callable[..., Any]  # capture: (A, g, **options) -> raw Tensor; the others -> CamResult
F_ = TypeVar("F_", bound=MethodFn)
MethodKind = Literal["capture", "multiscale", "perturbation", "attribution"]
KINDS: tuple[MethodKind, ...] = ("capture", "multiscale", "perturbation", "attribution")
# Arguments the engine passes to a perturbation or attribution method itself: not user options.
RUN_ARGUMENTS = frozenset({"model", "x", "layer", "target", "progress"})


@dataclass(frozen=True)
class MethodSpec:
    """A registered method and what runs it (see the module docstring for ``fn`` of each kind; None for the
    multi-scale method, which the engine computes from the shared capture)."""

    name: str
    label: str
    kind: MethodKind
    needs_gradients: bool
    reference: str
    fn: MethodFn | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    label: str,
    reference: str,
    needs_gradients: bool = True,
    kind: MethodKind = "capture",
    **defaults: Any,
) -> Callable[[F_], F_]:
    """Decorator registering ``fn`` as the method ``name`` of ``kind`` (``defaults`` are the keyword options
    the engine passes to a capture method)."""

    def deco(fn: F_) -> F_:
        if name in METHODS:
            raise ValueError(f"a method named {name!r} is already registered")
        if kind not in KINDS or kind == "multiscale":
            raise ValueError(f"register_method takes kind capture, perturbation or attribution, got {kind!r}")
        METHODS[name] = MethodSpec(name, label, kind, needs_gradients, reference, fn, dict(defaults))
        return fn

    return deco


def register_external(
    name: str, *, label: str, reference: str, kind: MethodKind, needs_gradients: bool
) -> None:
    """Register a method that the engine computes itself from the shared capture (multi-scale)."""
    if name in METHODS:
        raise ValueError(f"a method named {name!r} is already registered")
    METHODS[name] = MethodSpec(name, label, kind, needs_gradients, reference)


def list_methods(kind: MethodKind | None = None) -> list[str]:
    """Names of the registered methods, optionally of one kind."""
    return [n for n, s in METHODS.items() if kind is None or s.kind == kind]


def method_labels(kind: MethodKind | None = None) -> dict[str, str]:
    """Registered names → their labels (e.g. "gradcam" → "Grad-CAM"), optionally of one kind."""
    return {n: METHODS[n].label for n in list_methods(kind)}


def option_names(name: str) -> set[str]:
    """The keyword options method ``name`` takes (for ``compute_cams(options={name: {...}})``)."""
    spec = get_method(name)
    if spec.kind == "multiscale":
        return {"fuse"}
    assert spec.fn is not None
    params = list(inspect.signature(spec.fn).parameters)
    if spec.kind == "capture":
        return set(params[2:])
    return {p for p in params if p not in RUN_ARGUMENTS}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown CAM method {str(name)[:40]!r}; available: {', '.join(METHODS)}"
        ) from None


def _weighted_sum(w: Tensor, a: Tensor) -> Tensor:
    """Σ_k w[n, k] · A[n, k]  →  (N, h, w)."""
    n, c, h, w_ = a.shape
    return torch.bmm(w[:, None, :].to(a.dtype), a.reshape(n, c, h * w_)).reshape(n, h, w_)


@register_method("gradcam", label="Grad-CAM", reference="Selvaraju et al., ICCV 2017")
def gradcam(a: Tensor, g: Tensor) -> Tensor:
    """``Σ_k mean_ij(g[k]) · A[k]``."""
    return _weighted_sum(g.mean(dim=(2, 3)), a)


@register_method(
    "gradcampp", label="Grad-CAM++", reference="Chattopadhay et al., WACV 2018, eq. 19", eps=1e-7
)
def gradcampp(a: Tensor, g: Tensor, eps: float = 1e-7) -> Tensor:
    """``α = g² / (2g² + Σ_ab A[k]_ab · g³ + ε)`` (α = 0 where g = 0), ``w_k = Σ_ij α · ReLU(g)``,
    map ``Σ_k w_k A[k]``."""
    g2 = g * g
    denom = 2.0 * g2 + a.sum(dim=(2, 3), keepdim=True) * (g2 * g) + eps
    ok = (g != 0) & (denom != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g))
    w = (alpha * F.relu(g)).sum(dim=(2, 3))
    return _weighted_sum(w, a)


@register_method("xgradcam", label="XGrad-CAM", reference="Fu et al., BMVC 2020", eps=1e-7)
def xgradcam(a: Tensor, g: Tensor, eps: float = 1e-7) -> Tensor:
    """``w_k = Σ_ij (A[k]_ij / (Σ_ab A[k]_ab + ε)) · g[k]_ij``."""
    w = (a * g).sum(dim=(2, 3)) / (a.sum(dim=(2, 3)) + eps)
    return _weighted_sum(w, a)


@register_method("hirescam", label="HiResCAM", reference="Draelos & Carin, 2020")
def hirescam(a: Tensor, g: Tensor) -> Tensor:
    """``Σ_k g[k] ⊙ A[k]`` (element-wise, no spatial mean)."""
    return (g * a).sum(dim=1)


@register_method("layercam", label="LayerCAM", reference="Jiang et al., IEEE TIP 2021")
def layercam(a: Tensor, g: Tensor) -> Tensor:
    """``Σ_k ReLU(g[k]) ⊙ A[k]``."""
    return (F.relu(g) * a).sum(dim=1)


@register_method(
    "eigencam", label="EigenCAM", reference="Muhammad & Yeasin, IJCNN 2020", needs_gradients=False
)
def eigencam(a: Tensor, g: Tensor | None = None) -> Tensor:
    """Projection of the centred (hw × C) activations on their first principal direction, signed so that the
    map correlates positively with the channel-mean activation (the SVD sign is otherwise arbitrary).

    Computed from the smaller of the two Gram matrices in float64 (hw × hw: ``u₁·σ₁``; C × C: ``X v₁``), which
    equals ``X v₁`` of the SVD ``X = U Σ Vᵀ`` up to sign.
    """
    n, c, h, w = a.shape
    x = a.reshape(n, c, h * w).transpose(1, 2).double()  # (N, hw, C)
    x = x - x.mean(dim=1, keepdim=True)
    if h * w <= c:
        gram = x @ x.transpose(1, 2)  # (N, hw, hw)
        evals, evecs = torch.linalg.eigh(gram)
        proj = evecs[:, :, -1] * evals[:, -1:].clamp_min(0).sqrt()
    else:
        cov = x.transpose(1, 2) @ x  # (N, C, C)
        _, evecs = torch.linalg.eigh(cov)
        proj = (x @ evecs[:, :, -1:])[:, :, 0]
    mean_act = a.mean(dim=1).reshape(n, h * w).double()
    mean_act = mean_act - mean_act.mean(dim=1, keepdim=True)
    sign = torch.where((proj * mean_act).sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
    return (proj * sign).reshape(n, h, w).to(a.dtype)


register_external(
    "ms_gradcampp",
    label="MS Grad-CAM++",
    reference="Grad-CAM++ fused over depths (METHODS.md §1)",
    kind="multiscale",
    needs_gradients=True,
)


def minmax(maps: Tensor, rel_tol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-map min-max to [0, 1] over the last two dims; a constant map (range ≤ rel_tol · max|value|, or 0)
    becomes all zeros and is flagged. Returns (normalised (N, H, W), constant (N,) bool)."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values
    hi = flat.max(dim=1).values
    rng = hi - lo
    scale = torch.maximum(hi.abs(), lo.abs())
    constant = (rng <= rel_tol * scale) | (rng == 0) | ~torch.isfinite(rng)
    safe = torch.where(constant, torch.ones_like(rng), rng)
    out = (maps - lo[:, None, None]) / safe[:, None, None]
    out = torch.where(constant[:, None, None], torch.zeros_like(out), out)
    return out.clamp_(0.0, 1.0), constant


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (align_corners=False) resize of (N, h, w) maps to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def postprocess(raw: Tensor, size: tuple[int, int], normalize: bool = True) -> tuple[Tensor, Tensor]:
    """ReLU → bilinear upsample to ``size`` → per-map min-max to [0, 1] (skipped when ``normalize`` is False;
    constant maps are still flagged). Returns (maps (N, H, W), constant (N,)). A raw map with NaN or ±inf
    raises NonFiniteError: it is not a constant map (Score-CAM gets one when the model gives NaN on a masked
    or all-zero input, e.g. a model that standardises each input by its own standard deviation)."""
    from verification.cam.capture import ADVICE_MODEL, check_finite

    check_finite(raw, "the raw map", ADVICE_MODEL)
    up = upsample(F.relu(raw), size)
    norm, constant = minmax(up)
    if not normalize:
        return torch.where(constant[:, None, None], torch.zeros_like(up), up), constant
    return norm, constant
