"""CAMs: capture (hooks scoped to one call), methods, targets, layer discovery, result records.

The gradient family (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, EigenCAM, MS Grad-CAM++) comes from
one forward and one backward per batch through :func:`compute_cams`; Score-CAM and Ablation-CAM run in
:mod:`verification.cam.scorecam`; pixel attributions (captum) in :mod:`verification.cam.attribution`.
"""

from __future__ import annotations

from typing import Any

from verification.cam.api import compute_cams
from verification.cam.capture import Capture, capture
from verification.cam.layers import LayerInfo, default_target_layer, list_layers, stage_outputs
from verification.cam.methods import METHODS, MethodSpec, get_method, list_methods, register_method
from verification.cam.records import CamResult
from verification.cam.targets import (
    ClassLogit,
    ClassProbability,
    CustomTarget,
    LabelLogit,
    MultiLabel,
    SegmentationTarget,
    Target,
    TargetScores,
    as_target,
)


def compute_attribution(
    model: Any, x: Any, method: str = "saliency", target: Any = None, **kwargs: Any
) -> Any:
    """Pixel attribution through captum (saliency, integrated_gradients, occlusion) as a CamResult with layer
    "input"; see :func:`verification.cam.attribution.compute_attribution`."""
    from verification.cam.attribution import compute_attribution as _impl

    return _impl(model, x, method=method, target=target, **kwargs)


__all__ = [
    "METHODS",
    "CamResult",
    "Capture",
    "ClassLogit",
    "ClassProbability",
    "CustomTarget",
    "LabelLogit",
    "LayerInfo",
    "MethodSpec",
    "MultiLabel",
    "SegmentationTarget",
    "Target",
    "TargetScores",
    "as_target",
    "capture",
    "compute_attribution",
    "compute_cams",
    "default_target_layer",
    "get_method",
    "list_layers",
    "list_methods",
    "register_method",
    "stage_outputs",
]
