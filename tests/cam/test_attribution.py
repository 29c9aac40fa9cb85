"""captum attributions as CamResult: hand-derived gradients on linear models, IG completeness, occlusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from verification.cam.attribution import compute_attribution, occlusion_window
from verification.errors import CancelledError
from verification.io.records import LoadedModel


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()


def _w(model: nn.Module, cls: int) -> np.ndarray:
    return model[1].weight.detach()[cls].view(2, 4, 4).numpy()


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_saliency_is_abs_weight_on_a_linear_model() -> None:
    model = _linear()
    x = torch.randn(2, 2, 4, 4)
    res = compute_attribution(model, x, "saliency", target=[1, 2])
    for i, c in enumerate([1, 2]):
        np.testing.assert_allclose(res.raw[i], np.abs(_w(model, c)).sum(axis=0), rtol=1e-6)
    assert res.layer == "input"
    assert res.method == "saliency"
    assert res.targets == (1, 2)
    assert res.maps.shape == (2, 4, 4)
    assert res.maps.min() >= 0.0
    assert res.maps.max() == pytest.approx(1.0)


def test_integrated_gradients_linear_and_black_baseline() -> None:
    model = _linear()
    x = torch.randn(1, 2, 4, 4)
    # bare module: black = zeros; IG of a linear model = (x − 0) ⊙ w exactly
    res = compute_attribution(model, x, "integrated_gradients", target=0)
    np.testing.assert_allclose(res.raw[0], np.abs(x[0].numpy() * _w(model, 0)).sum(axis=0), rtol=1e-4)
    assert "zeros" in res.provenance["baseline"]
    # LoadedModel: black = (0 − mean) / std per channel
    loaded = LoadedModel(
        module=model,
        in_channels=2,
        input_size=(4, 4),
        class_names=("a", "b", "c"),
        mean=(0.5, 0.25),
        std=(0.2, 0.5),
        source_format="module",
        content_hash="test",
    )
    res = compute_attribution(loaded, x, "integrated_gradients", target=0)
    black = torch.tensor([-0.5 / 0.2, -0.25 / 0.5]).view(2, 1, 1)
    expected = np.abs((x[0] - black).numpy() * _w(model, 0)).sum(axis=0)
    np.testing.assert_allclose(res.raw[0], expected, rtol=1e-4)
    assert "mean" in res.provenance["baseline"]


def test_integrated_gradients_completeness_on_a_nonlinear_net() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()
    x = torch.randn(2, 1, 6, 6)
    res = compute_attribution(model, x, "integrated_gradients", n_steps=64)
    # independent check of completeness: Σ attr ≈ y(x) − y(0), with the signed attributions from captum
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(model).attribute(
        x, baselines=torch.zeros_like(x), target=list(res.targets), n_steps=64
    )
    with torch.no_grad():
        gap = model(x)[[0, 1], list(res.targets)] - model(torch.zeros_like(x))[[0, 1], list(res.targets)]
    np.testing.assert_allclose(attr.sum(dim=(1, 2, 3)).numpy(), gap.numpy(), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(res.raw, attr.abs().sum(dim=1).detach().numpy(), rtol=1e-5, atol=1e-7)
    assert float(res.provenance["completeness_gap_max"]) < 1e-2 * float(gap.abs().max())


def test_occlusion_hand_derived() -> None:
    model = _linear()
    x = torch.randn(1, 2, 4, 4)
    res = compute_attribution(model, x, "occlusion", target=2, window=(2, 2), stride=(2, 2), baseline=0.0)
    # each pixel lies in one 2x2 window over both channels: attribution = y(x) − y(x with the window zeroed)
    # = Σ_{c, q∈window} w_cq x_cq, the same at every (c, p) of the window; the map sums |·| over 2 channels
    contrib = (x[0].numpy() * _w(model, 2)).sum(axis=0)
    drop = contrib.reshape(2, 2, 2, 2).sum(axis=(1, 3))
    expected = 2 * np.abs(np.kron(drop, np.ones((2, 2))))
    np.testing.assert_allclose(res.raw[0], expected, rtol=1e-5, atol=1e-6)
    assert res.provenance["window"] == "2x2"


def test_occlusion_window_scales_with_the_image() -> None:
    assert occlusion_window(224, 224) == ((16, 16), (8, 8))
    assert occlusion_window(32, 32) == ((2, 2), (1, 1))
    assert occlusion_window(8, 8) == ((1, 1), (1, 1))


def test_segmentation_target_attribution() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)).eval()  # (N, 2, H, W) logits: a "segmentation" net
    x = torch.randn(1, 1, 5, 5)
    res = compute_attribution(model, x, "saliency", target=1)
    assert res.target_kind == "segmentation"
    # y = Σ_{p: softmax_1(p) ≥ 0.5} logit_1(p), differentiated by hand with autograd (mask held fixed)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    mask = (torch.softmax(out.detach(), dim=1)[:, 1] >= 0.5).float()
    assert 0 < mask.sum() < 25
    (g,) = torch.autograd.grad((out[:, 1] * mask).sum(), xg)
    np.testing.assert_allclose(res.raw[0], g[0].abs().sum(dim=0).numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion"])
def test_no_side_effects_and_cancellation(method: str) -> None:
    model = _linear()
    model.train()
    x = torch.randn(2, 2, 4, 4)
    x0 = x.clone()
    compute_attribution(model, x, method)
    assert torch.equal(x, x0)
    assert not x.requires_grad
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert _no_hooks(model)
    with pytest.raises(CancelledError):
        compute_attribution(model, x, method, progress=lambda done, total, msg: done == 0)
    assert _no_hooks(model)
    assert all(m.training for m in model.modules())


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="saliency"):
        compute_attribution(_linear(), torch.randn(1, 2, 4, 4), "lime")
