"""Our Grad-CAM family against pytorch-grad-cam 1.5.7 (and Grad-CAM against captum's LayerGradCam).

Seeded random torchvision models on real images (skimage astronaut/chelsea, the RG1 chest CR from
pydicom-data). Two comparisons per method and model, as the issue asks:

1. at the layer's own resolution, both raw maps (ours: ``CamResult.raw``; theirs: ``get_cam_image`` on the
   activations/gradients their own hooks captured) put through the *same* normalisation — ReLU then
   pytorch-grad-cam's ``scale_cam_image`` (``(x - min) / (max + 1e-7)``): max abs difference ≤ 1e-4;
2. after upsampling, our ``maps`` against their output: Pearson ≥ 0.999 per image (they min-max then resize
   with cv2, we resize with torch then min-max — bilinear resampling conventions differ slightly).

Deliberate differences, compared on the part that should agree:

- Grad-CAM++: the formula is the same (eq. 19 with α = 0 where g = 0) but their ε is 1e-6 where METHODS.md
  fixes 1e-7. With a random model the gradients at the last block are ~1e-4, so g² is comparable to ε and the
  two defaults give visibly different weights. We therefore compare with ``eps=1e-6`` passed to ours (same
  formula, same constant) and test separately that our default uses 1e-7.
- EigenCAM: they take the SVD projection as is; its sign is arbitrary. We fix the sign so the map correlates
  positively with the channel-mean activation (METHODS.md). We compare the raw projections up to that sign
  (scale-free, ≤ 1e-4) and the upsampled maps only where the signs coincide.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from verification.cam import compute_cams

from .images import astronaut, chelsea, chest

THEIRS = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
}
OPTIONS = {"gradcampp": {"eps": 1e-6}}  # pytorch-grad-cam's ε; see the module docstring


def _model(name: str, seed: int = 0, in_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(num_classes=10)
    if in_channels == 1:
        model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return model.eval()


CASES = {
    # name: (architecture, layer, images, in_channels)
    "resnet18": ("resnet18", "layer4", lambda: torch.cat([astronaut(128), chelsea(128)]), 3),
    "resnet18_1ch_chest": ("resnet18", "layer4", lambda: chest(160, 1), 1),
    "resnet50": ("resnet50", "layer4", lambda: chelsea(128), 3),
    # densenet's default layer ``features`` is edited in place by the functional ReLU that follows it, which
    # pytorch-grad-cam then captures as the post-ReLU tensor while we keep the module's true output (see
    # test_capture.py::test_densenet_features_is_the_module_output); denseblock4 is untouched by that ReLU.
    "densenet121": ("densenet121", "features.denseblock4", lambda: chest(112), 3),
    "mobilenet_v3_small": ("mobilenet_v3_small", "features", lambda: astronaut(160), 3),
}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize(
    "case",
    [
        "resnet18",
        "resnet18_1ch_chest",
        pytest.param("resnet50", marks=pytest.mark.slow),
        pytest.param("densenet121", marks=pytest.mark.slow),
        "mobilenet_v3_small",
    ],
)
def test_six_methods_match_pytorch_grad_cam(case: str) -> None:
    torch.set_num_threads(2)
    arch, layer, images, in_ch = CASES[case]
    model = _model(arch, in_channels=in_ch)
    x = images()
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    ours = {
        r.method: r for r in compute_cams(model, x, methods=list(THEIRS), layers=[layer], options=OPTIONS)
    }
    assert all(r.targets == tuple(classes) for r in ours.values())
    module = dict(model.named_modules())[layer]
    targets = [ClassifierOutputTarget(c) for c in classes]
    for method, cls in THEIRS.items():
        with cls(model=model, target_layers=[module]) as cam:
            full = cam(input_tensor=x, targets=targets)
            acts = cam.activations_and_grads.activations[0].numpy()
            grads = cam.activations_and_grads.gradients[0].numpy() if method != "eigencam" else None
            raw = cam.get_cam_image(x, module, targets, acts, grads, False)
        mine = ours[method]
        assert mine.raw.shape == raw.shape
        if method == "eigencam":
            sign = np.sign((mine.raw * raw).reshape(len(raw), -1).sum(1))[:, None, None]
            a = mine.raw / np.abs(mine.raw).max(axis=(1, 2), keepdims=True)
            b = sign * raw / np.abs(raw).max(axis=(1, 2), keepdims=True)
            assert np.abs(a - b).max() <= 1e-4, f"{case}/{method}: raw projections differ beyond the sign"
            same = sign[:, 0, 0] > 0
            if same.any():
                for i in np.flatnonzero(same):
                    assert _pearson(mine.maps[i], full[i]) >= 0.999
            continue
        norm = lambda r: scale_cam_image(np.maximum(r, 0))  # noqa: E731 - the same normaliser for both
        diff = np.abs(norm(mine.raw) - norm(raw)).max()
        assert diff <= 1e-4, f"{case}/{method}: max abs diff {diff:.2e} at layer resolution"
        for i in range(len(x)):
            r = _pearson(mine.maps[i], full[i])
            assert r >= 0.999, f"{case}/{method}: Pearson {r:.5f} after upsampling (image {i})"


def test_gradcampp_default_eps_is_methods_md() -> None:
    """METHODS.md: ε = 1e-7 by default; passing 1e-6 reproduces pytorch-grad-cam (tested above)."""
    torch.manual_seed(0)
    a = torch.rand(1, 3, 4, 4)
    g = torch.randn(1, 3, 4, 4) * 1e-3
    from verification.cam.methods import METHODS, gradcampp

    assert METHODS["gradcampp"].defaults == {"eps": 1e-7}
    g2 = g**2
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g**3 + 1e-7)
    w = (alpha * g.clamp_min(0)).sum((2, 3))
    expected = (w[:, :, None, None] * a).sum(1)
    torch.testing.assert_close(gradcampp(a, g), expected, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(gradcampp(a, g, eps=1e-6), expected, rtol=1e-3)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_gradcam_matches_captum_layergradcam(arch: str) -> None:
    from captum.attr import LayerGradCam

    layer = "layer4" if arch == "resnet18" else "features"
    model = _model(arch, seed=1)
    x = torch.cat([astronaut(128), chelsea(128)])
    (ours,) = compute_cams(model, x, methods=["gradcam"], layers=[layer])
    module = dict(model.named_modules())[layer]
    theirs = LayerGradCam(model, module).attribute(x, target=list(ours.targets), relu_attributions=False)
    theirs_np = theirs[:, 0].detach().numpy()
    scale = np.abs(theirs_np).max()
    assert np.abs(ours.raw - theirs_np).max() <= 1e-4 * scale
