"""Early feature-map shift detection on a small seeded CNN and synthetic radiograph-like images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from verification.features import (
    build_feature_reference,
    capture_features,
    channel_statistics,
    check_features,
    early_layers,
)

SIZE = 48


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).eval()


def radiographs(n: int, seed: int) -> torch.Tensor:
    """Two bright 'lung' ellipses on a darker body, with mild texture — oriented, non-symmetric top/bottom."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    out = []
    for _ in range(n):
        body = 0.3 + 0.1 * rng.random()
        img = np.full((SIZE, SIZE), body)
        for cx in (0.3, 0.7):
            cx += 0.03 * rng.standard_normal()
            img += 0.4 * (((xx - cx) / 0.15) ** 2 + ((yy - 0.45) / 0.3) ** 2 < 1)
        img[: SIZE // 8] = 0.05  # dark band at the top (neck / collimation)
        img = gaussian_filter(img, 1.5) + 0.02 * rng.standard_normal((SIZE, SIZE))
        out.append(np.clip(img, 0, 1))
    return torch.from_numpy(np.stack(out)).float()[:, None]


def test_early_layers_are_the_first_stages() -> None:
    assert early_layers(small_cnn(), (1, SIZE, SIZE), 2) == ["0", "1"]


def test_channel_statistics_by_hand() -> None:
    acts = torch.tensor([[[[1.0, -1.0], [3.0, 0.0]]]])  # one channel: mean 0.75, std √(2.1875), active 2/4
    st = channel_statistics(acts)[0]
    assert st[0].item() == pytest.approx(0.75)
    assert st[1].item() == pytest.approx(np.std([1.0, -1.0, 3.0, 0.0]))
    assert st[2].item() == pytest.approx(0.5)


def test_capture_restores_train_flag_and_removes_hooks() -> None:
    model = small_cnn().train()
    acts = capture_features(model, radiographs(2, 0), ["0", "1"])
    assert acts["0"].shape == (2, 8, 24, 24)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_shifted_images_are_flagged_in_distribution_ones_are_not() -> None:
    model = small_cnn()
    ref = build_feature_reference(model, radiographs(40, 1), count=2, grid=(24, 24))
    assert ref.layers == ("0", "1")
    test = radiographs(20, 2)
    ind = check_features(model, ref, test)
    assert ind.flag_rate <= 0.2
    shifted = {
        "inverted": 1.0 - test,
        "exposure": (test * 1.6 + 0.2).clamp(0, 1),
        "rotation": torch.rot90(test, 1, dims=(2, 3)),
        "noise": (test + 0.15 * torch.randn(test.shape, generator=torch.Generator().manual_seed(0))).clamp(
            0, 1
        ),
        "blur": torch.from_numpy(gaussian_filter(test.numpy(), (0, 0, 3, 3))),
    }
    for kind, x in shifted.items():
        rep = check_features(model, ref, x)
        assert rep.flag_rate >= 0.8, (kind, rep.flag_rate)
    rows = ind.rows()
    assert {"shift_score", "score_max", "structure_ssim", "ssim_min", "flagged"} <= set(rows[0])


@pytest.mark.parametrize("stat", ["mean", "std", "active"])
def test_channel_stats_read_the_reference_layout_per_layer(stat: str) -> None:
    """Per layer, the image's statistic and the reference mean / std equal those computed directly with numpy
    from the captured activations (mean, population std, share > 0 over the pixels of each channel)."""
    model = small_cnn()
    images = radiographs(12, 5)
    ref = build_feature_reference(model, images, count=2, grid=(24, 24))
    acts = capture_features(model, images, list(ref.layers))
    direct = {
        "mean": lambda a: a.mean(axis=(2, 3)),
        "std": lambda a: a.std(axis=(2, 3)),
        "active": lambda a: (a > 0).mean(axis=(2, 3)),
    }[stat]
    one = {layer: acts[layer][3].numpy() for layer in ref.layers}
    rows = ref.channel_stats(one, stat)
    assert [r.layer for r in rows] == list(ref.layers)
    for r in rows:
        per_image = direct(acts[r.layer].double().numpy())  # (N, C)
        np.testing.assert_allclose(r.image, per_image[3], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.ref_mean, per_image.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.ref_std, per_image.std(0), rtol=1e-4, atol=1e-6)
