"""MS Grad-CAM++ and the single-pass guarantee."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from verification.cam import compute_cams

from .images import chelsea

SIX = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam"]


def _norm(m: np.ndarray) -> np.ndarray:
    m = np.maximum(m, 0)
    rng = m.max() - m.min()
    return (m - m.min()) / rng if rng > 0 else np.zeros_like(m)


@pytest.mark.parametrize("fuse", ["mean", "product"])
def test_ms_gradcampp_is_the_fusion_of_per_layer_gradcampp(fuse: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x = chelsea(96)
    (ms,) = compute_cams(model, x, methods=["ms_gradcampp"], ms_fuse=fuse)
    assert ms.layer == "layer2+layer3+layer4"
    per_layer = compute_cams(model, x, methods=["gradcampp"], layers=["layer2", "layer3", "layer4"])
    ups = [
        _norm(F.interpolate(torch.from_numpy(r.raw)[:, None], size=(96, 96), mode="bilinear")[0, 0].numpy())
        for r in per_layer
    ]
    fused = np.mean(ups, axis=0) if fuse == "mean" else np.prod(ups, axis=0)
    np.testing.assert_allclose(ms.raw[0], fused, atol=1e-5)
    np.testing.assert_allclose(ms.maps[0], _norm(fused), atol=1e-5)


def test_one_forward_and_one_autograd_grad_for_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    forwards = []
    model.register_forward_pre_hook(lambda m, a: forwards.append(1))
    calls = []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_grad(*args, **kwargs)

    def no_backward(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(".backward() must not be used")

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    from verification.cam import default_target_layer, stage_outputs

    default_target_layer(model, (3, 64, 64))  # layer discovery is cached per model and input shape
    stage_outputs(model, (3, 64, 64))
    forwards.clear()
    res = compute_cams(
        model, torch.randn(2, 3, 64, 64), methods=[*SIX, "ms_gradcampp"], layers=["layer3", "layer4"]
    )
    assert len(res) == 6 * 2 + 1
    assert len(forwards) == 1
    assert len(calls) == 1
