"""E0: the input gate on a small convolutional model — in-distribution images pass, inverted or noise images
are not assessable, a garbage-class prediction is not assessable."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from verification.io.records import LoadedModel
from verification.verdict.gate import apply_gate, build_gate, from_thumbnails, thumbnails

SIZE = 64


def toy(garbage: bool = False) -> LoadedModel:
    torch.manual_seed(0)
    k = 4 if garbage else 3
    module = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, k),
    )  # fmt: skip
    names = ("normal", "nodule", "effusion", "garbage")[:k]
    return LoadedModel(
        module=module.eval(), in_channels=1, input_size=(SIZE, SIZE), class_names=names, mean=(0.5,),
        std=(0.25,), source_format="module", content_hash="t" * 64,
        garbage_class="garbage" if garbage else None,
    )  # fmt: skip


def chest_like(n: int, seed: int) -> torch.Tensor:
    """Two dark ellipses on a bright body with noise: (n, 1, SIZE, SIZE) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = []
    for _ in range(n):
        img = 0.75 + 0.02 * rng.standard_normal((SIZE, SIZE))
        for cx in (0.3, 0.7):
            c = cx + 0.03 * rng.standard_normal()
            img -= 0.4 * (((xx - c) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
        out.append(np.clip(img, 0, 1))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


def normalised(model: LoadedModel, unit: torch.Tensor) -> torch.Tensor:
    return (unit - 0.5) / 0.25


def test_gate_passes_in_distribution_and_stops_shifted_images() -> None:
    model = toy()
    ref = normalised(model, chest_like(48, 0))
    thumbs = thumbnails(model, ref)
    assert thumbs.dtype == np.uint8
    assert thumbs.shape == (48, 128, 128)
    back = from_thumbnails(model, thumbs)
    assert back.shape == ref.shape
    # the stored thumbnails give the images back (mean grey-level error below 3 %, resampling of pixel noise)
    assert float((back - ref).abs().mean()) * 0.25 < 0.03
    gate = build_gate(model, thumbs)
    x = normalised(model, chest_like(12, 1))
    probs = torch.softmax(model.module(x), 1).detach().numpy()
    ok, reasons, numbers = apply_gate(gate, model, x, probs, None)
    assert ok.sum() >= 11, reasons  # in-distribution: at most one of twelve in the far tail
    inverted = normalised(model, 1.0 - chest_like(6, 2))
    noise = normalised(model, torch.rand(6, 1, SIZE, SIZE))
    rotated = normalised(model, torch.rot90(chest_like(6, 4), 1, dims=(2, 3)))
    p = torch.softmax(model.module(rotated), 1).detach().numpy()
    ok, reasons, numbers = apply_gate(gate, model, rotated, p, None)
    assert not ok.any()
    assert np.all(numbers["E0.layout_shift"] > gate.layout_max)  # same statistics, other layout
    for bad in (inverted, noise):
        p = torch.softmax(model.module(bad), 1).detach().numpy()
        ok, reasons, numbers = apply_gate(gate, model, bad, p, None)
        assert not ok.any()
        assert all(r and ("shifted" in r or "differs" in r) for r in reasons)
        assert np.all(numbers["E0.image_shift"] > gate.stats_max) or np.all(
            numbers["E0.feature_shift"] > gate.feature_max
        )


def test_garbage_class_prediction_is_not_assessable() -> None:
    model = toy(garbage=True)
    x = normalised(model, chest_like(4, 3))
    probs = np.tile(np.array([[0.1, 0.1, 0.1, 0.7]], np.float32), (4, 1))
    probs[0] = [0.7, 0.1, 0.1, 0.1]
    ok, reasons, numbers = apply_gate(None, model, x, probs, None)
    assert ok.tolist() == [True, False, False, False]
    assert reasons[0] is None
    assert "garbage class" in str(reasons[1])
    assert numbers["E0.garbage"].tolist() == [0.0, 1.0, 1.0, 1.0]
