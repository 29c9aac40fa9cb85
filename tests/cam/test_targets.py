"""Targets: per-sample classes in a batch, probability targets, segmentation on the project's U-Net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, SemanticSegmentationTarget
from torch import nn

from verification.cam import ClassProbability, SegmentationTarget, as_target, compute_cams
from verification.errors import ShapeError

from .images import astronaut, chelsea, chest

SIX = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam"]


def _resnet() -> nn.Module:
    torch.manual_seed(3)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_batch_with_different_classes_equals_per_sample_results() -> None:
    """Each sample is scored on its own class (MONAI mixes them); batch maps equal one-at-a-time maps."""
    model = _resnet()
    x = torch.cat([astronaut(64), chelsea(64), chest(64)])
    for target in ([2, 5, 9], None):
        batch = compute_cams(model, x, methods=[*SIX, "ms_gradcampp"], target=target)
        if target is not None:
            assert batch[0].targets == (2, 5, 9)
        singles = [
            compute_cams(model, x[i : i + 1], methods=[*SIX, "ms_gradcampp"], target=batch[0].targets[i])
            for i in range(3)
        ]
        for j, res in enumerate(batch):
            for i in range(3):
                np.testing.assert_allclose(res.raw[i], singles[i][j].raw[0], rtol=1e-4, atol=1e-6)
                np.testing.assert_allclose(res.maps[i], singles[i][j].maps[0], atol=1e-4)
    with torch.no_grad():
        assert batch[0].targets == tuple(model(x).argmax(1).tolist())


def test_probability_target_matches_pytorch_grad_cam_softmax_target() -> None:
    model = _resnet()
    x = torch.cat([astronaut(96), chelsea(96)])
    (ours,) = compute_cams(model, x, methods=["gradcam"], target=ClassProbability([1, 4]))
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        cam(input_tensor=x, targets=[ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(4)])
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(x, model.layer4, None, acts, grads, False)
    np.testing.assert_allclose(ours.raw, raw, rtol=1e-4, atol=1e-4 * np.abs(raw).max())
    assert ours.target_kind == "probability"
    np.testing.assert_allclose(ours.probs.sum(1), 1.0, rtol=1e-5)


class _DictSeg(nn.Module):
    """torchvision segmentation models return {"out": logits, "aux": ...}."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(x)
        return {"out": out, "aux": out.detach() * 0}


def _unet() -> nn.Module:
    from verification.io.architectures import build_architecture

    torch.manual_seed(0)
    return build_architecture("unet", num_classes=3, in_channels=1).eval()


def test_segmentation_target_on_unet_matches_pytorch_grad_cam() -> None:
    """pytorch-grad-cam's SemanticSegmentationTarget(c, mask) is ``Σ mask · logits_c``; with the mask of
    pixels whose softmax probability for c is ≥ 0.5 it is METHODS.md's segmentation target."""
    model = _unet()
    x = torch.cat([chest(64, 1), astronaut(64, 1)])
    c, t = 1, 0.5
    with torch.no_grad():
        # a random head scores ~1/3 everywhere: shift class 1's bias so that ~30 % of pixels reach t
        logits = model(x)
        margin = torch.logsumexp(logits[:, [0, 2]], dim=1) - logits[:, 1]
        model.head.bias[1] += torch.quantile(margin.flatten(), 0.3)
        logits = model(x)
    probs = logits.softmax(1)
    masks = (probs[:, c] >= t).float().numpy()
    assert masks.sum() > 0
    target = SegmentationTarget(c, threshold=t)
    res = compute_cams(_DictSeg(model), x, methods=["gradcam", "hirescam"], target=target)
    assert res[0].layer == "inner.decode.2"
    with GradCAM(model=model, target_layers=[model.decode[2]]) as cam:
        cam(input_tensor=x, targets=[SemanticSegmentationTarget(c, m) for m in masks])
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
    raw_grad = cam.get_cam_image(x, None, None, acts, grads, False)
    raw_hires = (acts * grads).sum(1)
    for ours, theirs in zip(res, (raw_grad, raw_hires)):
        for i in range(len(x)):
            if masks[i].sum() == 0:
                assert ours.constant[i]
                continue
            scale = np.abs(theirs[i]).max()
            np.testing.assert_allclose(ours.raw[i], theirs[i], atol=1e-4 * scale, rtol=1e-4)
    assert res[0].target_kind == "segmentation"
    assert res[0].probs.shape == (2, 3)
    np.testing.assert_allclose(res[0].logits, logits.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_segmentation_default_class_and_int_target() -> None:
    model = _unet()
    x = chest(64, 1)
    (by_default,) = compute_cams(model, x)
    assert by_default.target_kind == "segmentation"
    with torch.no_grad():
        pred = model(x).argmax(1)
    counts = torch.bincount(pred.flatten(), minlength=3)
    assert by_default.targets == (int(counts[1:].argmax()) + 1,)  # most frequent non-background class
    (by_int,) = compute_cams(model, x, target=2)
    assert by_int.targets == (2,)
    assert by_int.target_kind == "segmentation"


def test_target_errors() -> None:
    model = _resnet()
    x = astronaut(64)
    with pytest.raises(ShapeError, match="out of range"):
        compute_cams(model, x, target=10)
    with pytest.raises(ShapeError, match="per-sample targets"):
        compute_cams(model, x, target=[1, 2])
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        compute_cams(model, x, target=SegmentationTarget(1))
    with pytest.raises(TypeError):
        as_target("cat")


def test_custom_callable_target() -> None:
    model = _resnet()
    x = torch.cat([astronaut(64), chelsea(64)])
    (custom,) = compute_cams(model, x, target=lambda out: out[:, 3] - out[:, 4])
    (a,) = compute_cams(model, x, target=3)
    (b,) = compute_cams(model, x, target=4)
    np.testing.assert_allclose(custom.raw, a.raw - b.raw, rtol=1e-4, atol=1e-6)
    assert custom.targets == (-1, -1)
    assert custom.target_kind == "custom"


def test_segmentation_region_is_the_scored_mask() -> None:
    """region(output) is M: the score is Σ over M of the class logit, and M is where its probability ≥ 0.5."""
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 3, 6, 5, generator=g)
    target = SegmentationTarget(2)
    m = target.region(out)
    assert m.shape == (2, 6, 5)
    assert m.dtype == torch.bool
    assert torch.equal(m, torch.softmax(out, 1)[:, 2] >= 0.5)
    torch.testing.assert_close(target(out).scores, (out[:, 2] * m).sum(dim=(1, 2)))
    with pytest.raises(ShapeError):
        target.region(torch.zeros(2, 3))
