"""Fixed-weight toy networks whose maps are derived by hand.

Net: x (1, 1, 2, 2) = [[1, 2], [3, 4]] → 1×1 conv to two channels with weights (2, 1), no bias, so
A₀ = 2x, A₁ = x → global average pool → linear V = [[1, -1], [0.5, 1]] (+ any bias). Then
``logit_c = Σ_k V[c, k] · mean(A_k)`` and the gradient at the conv output is constant per channel:
``g_k = V[c, k] / 4``. For class 0: g = (0.25, -0.25); for class 1: g = (0.125, 0.25).

Class 0 by hand (Σ A₀ = 20, Σ A₁ = 10):
- Grad-CAM: 0.25 · 2x − 0.25 · x = 0.25 x.  HiResCAM: the same (g is constant over space).
- XGrad-CAM: w_k = Σ A_k g_k / Σ A_k = g_k → 0.25 x (up to ε).
- Grad-CAM++: channel 1 has ReLU(g) = 0 → w₁ = 0; channel 0: α = g² / (2g² + 20 g³) = (1/16) / (2/16 + 20/64)
  = 1/7, w₀ = Σ_ij α · g = 4 · (1/7) · 0.25 = 1/7 → map 2x / 7.
- LayerCAM: ReLU(g₀) · A₀ = 0.5 x.
- EigenCAM: the centred rows are (x − 2.5)·(2, 1), rank one; the first principal direction is (2, 1)/√5, the
  projection √5 (x − 2.5), positively correlated with the channel mean 1.5 x, so no sign flip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from verification.cam import ClassLogit, MultiLabel, SegmentationTarget, compute_cams

X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
XN = X[0, 0].numpy()


def _toy() -> nn.Module:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, 1.0]).view(2, 1, 1, 1))
        fc.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 1.0]]))
        fc.bias.copy_(torch.tensor([0.3, -7.0]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


EXPECTED_CLASS0 = {
    "gradcam": 0.25 * XN,
    "hirescam": 0.25 * XN,
    "xgradcam": 0.25 * XN,
    "gradcampp": 2 * XN / 7,
    "layercam": 0.5 * XN,
    "eigencam": math.sqrt(5) * (XN - 2.5),
}


@pytest.mark.parametrize("method", list(EXPECTED_CLASS0))
def test_toy_maps_by_hand(method: str) -> None:
    (res,) = compute_cams(_toy(), X, methods=[method], layers=["0"], target=0)
    np.testing.assert_allclose(res.raw[0], EXPECTED_CLASS0[method], rtol=1e-5, atol=1e-6)
    relu = np.maximum(EXPECTED_CLASS0[method], 0)
    np.testing.assert_allclose(res.maps[0], (relu - relu.min()) / (relu.max() - relu.min()), atol=1e-6)
    assert res.targets == (0,)
    assert res.target_kind == "logit"
    assert not res.constant[0]


def test_toy_class1_and_predicted_default() -> None:
    # class 1 by hand: g = (0.125, 0.25) → Grad-CAM 0.125·2x + 0.25·x = 0.5 x; fc bias makes class 0 predicted
    (res1,) = compute_cams(_toy(), X, layers=["0"], target=1)
    np.testing.assert_allclose(res1.raw[0], 0.5 * XN, rtol=1e-6)
    (res,) = compute_cams(_toy(), X, layers=["0"])
    assert res.targets == (0,)
    logits = np.array([5.0 - 2.5 + 0.3, 0.5 * 5.0 + 2.5 - 7.0])  # mean(A₀) = 5, mean(A₁) = 2.5
    np.testing.assert_allclose(res.logits[0], logits, rtol=1e-6)


def test_toy_constant_map_is_zero_and_flagged() -> None:
    # V[c] = (1, -2): g = (0.25, -0.5), Grad-CAM = 0.5x − 0.5x = 0 everywhere
    model = _toy()
    with torch.no_grad():
        model[3].weight[0] = torch.tensor([1.0, -2.0])
    (res,) = compute_cams(model, X, layers=["0"], target=0)
    np.testing.assert_allclose(res.raw[0], 0.0, atol=1e-7)
    assert res.constant[0]
    assert np.all(res.maps[0] == 0)


def test_toy_multilabel_scales_by_sigmoid_derivative() -> None:
    """∂σ(z)/∂A = σ(z)(1 − σ(z)) ∂z/∂A, so every gradient-linear map is the logit map times σ'(z)."""
    model = _toy()
    (logit,) = compute_cams(model, X, layers=["0"], target=ClassLogit(1))
    (ml,) = compute_cams(model, X, layers=["0"], target=MultiLabel(1))
    z = float(logit.logits[0, 1])
    s = 1 / (1 + math.exp(-z))
    np.testing.assert_allclose(ml.raw, logit.raw * s * (1 - s), rtol=1e-5)
    np.testing.assert_allclose(ml.probs[0], 1 / (1 + np.exp(-logit.logits[0])), rtol=1e-6)
    assert ml.target_kind == "multilabel"


def _seg_toy() -> nn.Module:
    """feat = 1×1 conv 1→2 (weights 1, −1), head = 1×1 conv 2→2 with W = [[1, 0], [0, 1]] + bias (0, 0.5):
    logits = (x, −x + 0.5). Class 0 is the softmax winner where x > −x + 0.5, i.e. x > 0.25."""
    feat = nn.Conv2d(1, 2, 1, bias=False)
    head = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        feat.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        head.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        head.bias.copy_(torch.tensor([0.0, 0.5]))
    return nn.Sequential(feat, head)


def test_segmentation_target_by_hand() -> None:
    """y = Σ_{p∈M} logit_0(p) with M = {p : softmax_0(p) ≥ 0.5} = {x > 0.25}; logit_0 = A₀, so g₀ = 1[M],
    g₁ = 0 and Grad-CAM = mean(1[M]) · A₀ = (|M| / hw) · x."""
    x = torch.tensor([[[[-1.0, 0.0, 0.2], [0.3, 1.0, 2.0], [0.26, -0.5, 3.0]]]])
    m = (x[0, 0] > 0.25).float()
    (res,) = compute_cams(_seg_toy(), x, layers=["0"], target=SegmentationTarget(0))
    np.testing.assert_allclose(res.raw[0], (m.mean() * x[0, 0]).numpy(), rtol=1e-6)
    (hires,) = compute_cams(_seg_toy(), x, methods=["hirescam"], layers=["0"], target=SegmentationTarget(0))
    np.testing.assert_allclose(hires.raw[0], (m * x[0, 0]).numpy(), rtol=1e-6)
    assert res.target_kind == "segmentation"
    assert res.targets == (0,)


def test_segmentation_empty_mask_gives_flagged_zero_map() -> None:
    x = torch.full((1, 1, 3, 3), -5.0)  # class 0 probability ≈ 0 everywhere
    res = compute_cams(
        _seg_toy(), x, methods=["gradcam", "eigencam"], layers=["0"], target=SegmentationTarget(0)
    )
    grad, eig = res
    assert grad.constant[0]
    assert np.all(grad.maps == 0)
    assert np.all(grad.raw == 0)
    assert grad.provenance["empty_target"] == "0"
    assert "empty_target" in eig.provenance  # recorded, but EigenCAM does not depend on the target
