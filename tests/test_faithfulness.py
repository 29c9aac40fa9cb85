"""Deletion / insertion curves and cascading randomisation on hand-checkable models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from verification.faithfulness import cascading_randomization, deletion_insertion, parameter_groups


class Linear(nn.Module):
    """logit 0 = Σ x·W (W = 0..15 on a 4×4 grid), logit 1 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.arange(16.0).reshape(1, 1, 4, 4), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.w).sum((1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_deletion_insertion_hand_case() -> None:
    x = torch.ones(1, 1, 4, 4)
    w = torch.arange(16.0).reshape(4, 4)
    cur = deletion_insertion(Linear(), x, w[None], target=0, steps=4, baseline="zero", score="logit")
    np.testing.assert_allclose(cur.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    # Removing the 4 largest weights at a time: 120 → 120−54 → 120−54−38 → 120−54−38−22 → 0.
    np.testing.assert_allclose(cur.deletion[0], [120, 66, 28, 6, 0])
    np.testing.assert_allclose(cur.insertion[0], [0, 54, 92, 114, 120])
    np.testing.assert_allclose(cur.deletion_auc, [np.trapezoid([120, 66, 28, 6, 0], dx=0.25)])
    np.testing.assert_allclose(cur.insertion_auc, [np.trapezoid([0, 54, 92, 114, 120], dx=0.25)])
    # The reversed map is less faithful: slower deletion, slower insertion.
    rev = deletion_insertion(Linear(), x, -w[None], target=0, steps=4, baseline="zero", score="logit")
    assert rev.deletion_auc[0] > cur.deletion_auc[0]
    assert rev.insertion_auc[0] < cur.insertion_auc[0]


def test_deletion_batches_in_chunks_and_keeps_model_flags() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    model.train()
    model[0].eval()
    x = torch.rand(3, 1, 12, 12)
    maps = np.random.default_rng(0).random((3, 6, 6))  # resized to the input
    a = deletion_insertion(model, x, maps, steps=5, chunk=7)
    b = deletion_insertion(model, x, maps, steps=5, chunk=1000)
    np.testing.assert_allclose(a.deletion, b.deletion, atol=1e-6)
    np.testing.assert_allclose(a.insertion[:, -1], a.deletion[:, 0], atol=1e-6)  # both are the clean image
    assert model.training
    assert not model[0].training
    assert ((a.deletion_auc >= 0) & (a.deletion_auc <= 1)).all()


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()


def test_parameter_groups_from_the_output_side() -> None:
    assert parameter_groups(small_cnn()) == ["4", "1.0", "0.0"]
    assert parameter_groups(small_cnn(), depth=1) == ["4", "1", "0"]


def test_cascading_randomization_changes_maps_but_not_the_model() -> None:
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = cascading_randomization(model, x, layer="1", seed=0)
    assert res.steps == ("4", "1.0", "0.0")
    assert res.ssim.shape == (3, 2)
    assert res.spearman.shape == (3, 2)
    assert res.maps.shape == (3, 2, 16, 16)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    # Once every layer is random, the map no longer resembles the trained one.
    assert float(np.nanmean(res.spearman[-1])) < 0.9
    again = cascading_randomization(model, x, layer="1", seed=0)
    np.testing.assert_allclose(again.ssim, res.ssim)


def test_spearman_of_identical_maps_is_one() -> None:
    from verification.faithfulness import _spearman

    a = torch.rand(3, 8, 8, dtype=torch.float64)
    assert _spearman(a, a) == pytest.approx(np.ones(3))
    assert _spearman(a, -a) == pytest.approx(-np.ones(3))
