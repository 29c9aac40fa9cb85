"""CAMs: capture (hooks scoped to one call), methods, targets, layer discovery, result records.

Every method is in one registry (:mod:`verification.cam.methods`: name, kind, label, what runs it) and runs
through :func:`compute_cams`: the gradient family (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM,
EigenCAM, MS Grad-CAM++) from one forward and one backward per batch; Score-CAM from
:mod:`verification.cam.scorecam` and Ablation-CAM from :mod:`verification.cam.ablation` (what they share with
the attributions: :mod:`verification.cam.perturb`); pixel attributions (captum) from
:mod:`verification.cam.attribution`. Importing this package registers them all.
"""

from __future__ import annotations

from verification.cam import ablation as _ablation  # noqa: F401  (registers Ablation-CAM)
from verification.cam import scorecam as _scorecam  # noqa: F401  (registers Score-CAM)
from verification.cam.api import compute_cams
from verification.cam.attribution import compute_attribution  # registers the captum attributions
from verification.cam.capture import Capture, capture
from verification.cam.layers import LayerInfo, default_target_layer, list_layers, stage_outputs
from verification.cam.methods import (
    METHODS,
    MethodSpec,
    get_method,
    list_methods,
    method_labels,
    register_method,
)
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
    TargetSpec,
    as_target,
)

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
    "TargetSpec",
    "as_target",
    "capture",
    "compute_attribution",
    "compute_cams",
    "default_target_layer",
    "get_method",
    "list_layers",
    "list_methods",
    "method_labels",
    "register_method",
    "stage_outputs",
]
