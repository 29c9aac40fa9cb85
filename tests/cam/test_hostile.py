"""Hostile input to the CAM entry points (issue #14, items 4 and 5): typed errors with short messages before
the model runs; NaN/inf in the input, the model's output or its gradients reported as non-finite, naming the
samples, instead of a blank map flagged "constant"."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from verification.cam import SegmentationTarget, capture, compute_attribution, compute_cams
from verification.cam.scorecam import ablation_cam, score_cam
from verification.errors import (
    InputTooLargeError,
    InvalidInputError,
    NonFiniteError,
    ShapeError,
    VerificationError,
)


class Tiny(nn.Module):
    """conv → ReLU ("act") → optional transform → mean pool → linear, 3 classes."""

    def __init__(self, after: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        self.after = after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.conv(x))
        if self.after is not None:
            a = self.after(a)
        return self.fc(a.mean(dim=(2, 3)))


def _x(n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _message(kind: type[VerificationError], fn: Callable[[], Any]) -> str:
    with pytest.raises(kind) as info:
        fn()
    text = str(info.value)
    assert 10 < len(text) <= 300, text
    return text


ENTRY_POINTS: dict[str, Callable[[nn.Module, Any], Any]] = {
    "compute_cams": lambda m, x: compute_cams(m, x, layers="act"),
    "capture": lambda m, x: capture(m, x, ["act"]),
    "score_cam": lambda m, x: score_cam(m, x, "act"),
    "ablation_cam": lambda m, x: ablation_cam(m, x, "act"),
    "saliency": lambda m, x: compute_attribution(m, x, "saliency"),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(
    ("x", "kind", "match"),
    [
        (torch.zeros(0, 3, 8, 8), ShapeError, "empty"),
        (torch.zeros(1, 3, 0, 0), ShapeError, "pixels"),
        (torch.zeros(3, 8, 8), ShapeError, r"\(N, C, H, W\)"),
        (np.zeros((1, 3, 8, 8), np.float32), ShapeError, r"\(N, C, H, W\)"),
        ("an image", ShapeError, r"\(N, C, H, W\)"),
    ],
    ids=["empty-batch", "0x0", "3d", "numpy", "str"],
)
def test_bad_inputs_are_typed(entry: str, x: Any, kind: type[VerificationError], match: str) -> None:
    assert re.search(match, _message(kind, lambda: ENTRY_POINTS[entry](Tiny(), x)))


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_names_the_sample(entry: str, bad: float) -> None:
    x = _x(3)
    x[2, 1, 4, 4] = bad
    text = _message(NonFiniteError, lambda: ENTRY_POINTS[entry](Tiny(), x))
    assert "the input" in text
    assert "sample 2 of 3" in text


def test_complex_and_bool_inputs_refused() -> None:
    for dtype in (torch.complex64, torch.bool):
        x = torch.zeros(1, 3, 8, 8, dtype=dtype)
        with pytest.raises(InvalidInputError, match=str(dtype)):
            compute_cams(Tiny(), x, layers="act")


def _nan_for_sample_1(a: torch.Tensor) -> torch.Tensor:
    out = a.clone()
    out[1] = math.nan
    return out


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_non_finite_model_output_is_reported_not_explained(entry: str) -> None:
    """Sample 1 turns to NaN inside the model (a sidecar's NaN std does the same): every entry point says the
    model's activations/output are not finite for sample 1, instead of returning a 'constant' blank map."""
    text = _message(NonFiniteError, lambda: ENTRY_POINTS[entry](Tiny(after=_nan_for_sample_1), _x(2)))
    assert "sample 1 of 2" in text
    assert "output" in text or "activations" in text


def test_weights_scaled_by_1e30_are_reported() -> None:
    model = Tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)
    text = _message(NonFiniteError, lambda: compute_cams(model, _x(2), methods=["gradcam", "eigencam"]))
    assert "samples 0, 1 of 2" in text


def test_non_finite_gradients_reported_while_gradient_free_methods_work() -> None:
    """sqrt after the ReLU: the output is finite but d sqrt(a)/da is infinite where the ReLU gave 0."""
    model = Tiny(after=torch.sqrt)
    text = _message(NonFiniteError, lambda: compute_cams(model, _x(2), methods=["gradcam"], layers="act"))
    assert "gradient at layer 'act'" in text
    (eigen,) = compute_cams(model, _x(2), methods=["eigencam"], layers="act")
    assert np.isfinite(eigen.maps).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"methods": ["nope"]},
        {"methods": []},
        {"methods": ""},
        {"methods": [3]},
        {"methods": None},
        {"layers": 123},
        {"layers": []},
        {"layers": [None]},
        {"options": {"gradcam": {"bogus": 1}}},
        {"options": {"nope": {}}},
        {"options": {"gradcampp": 1e-7}},
        {"options": "eps"},
        {"methods": ["scorecam"], "options": {"scorecam": {"mode": "slow"}}},
        {"methods": ["scorecam"], "options": {"scorecam": {"bogus": 1}}},
        {"target": "nodule?"},
        {"target": True},
        {"target": [1.5, 0.5]},
        {"target": object()},
        {"target": SegmentationTarget},  # a class is callable, but not a target of these logits
    ],
    # stable ids (no object addresses): pytest-xdist workers must collect the same names
    ids=lambda kw: re.sub(r" at 0x[0-9a-f]+", "", repr(kw))[:60],
)
def test_bad_arguments_are_typed(kwargs: dict[str, Any]) -> None:
    kw = {"layers": "act", **kwargs}
    with pytest.raises(VerificationError) as info:
        compute_cams(Tiny(), _x(2), **kw)
    assert isinstance(info.value, (InvalidInputError, ShapeError)), repr(info.value)
    assert len(str(info.value)) <= 300


@pytest.mark.parametrize(
    ("target", "match"), [(99, "out of range"), (-1, "out of range"), ([1], "per-sample")]
)
def test_target_ranges(target: Any, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        compute_cams(Tiny(), _x(2), layers="act", target=target)


def test_friendly_spellings_accepted() -> None:
    m, x = Tiny(), _x(2)
    (a,) = compute_cams(m, x, methods="gradcam", layers="act", target=np.int64(2))
    (b,) = compute_cams(m, x, methods=["gradcam"], layers="act", target=2)
    np.testing.assert_array_equal(a.maps, b.maps)


@pytest.mark.parametrize("threshold", [math.nan, 2.0, -0.1, "0.5", True])
def test_segmentation_threshold_refused(threshold: Any) -> None:
    with pytest.raises(InvalidInputError):
        SegmentationTarget(1, threshold=threshold)


@pytest.mark.parametrize("fn", [score_cam, ablation_cam])
def test_absurd_chunk_size_refused_before_allocating(fn: Callable[..., Any]) -> None:
    t0 = time.perf_counter()
    with pytest.raises(InputTooLargeError, match="chunk_size"):
        fn(Tiny(), _x(1, 224), "act", chunk_size=10**9)
    assert time.perf_counter() - t0 < 2.0
    with pytest.raises(InvalidInputError):
        fn(Tiny(), _x(1), "act", chunk_size=0)
    with pytest.raises(InvalidInputError):
        fn(Tiny(), _x(1), 7)


def test_not_a_model() -> None:
    for fn in (lambda: compute_cams("model", _x(1)), lambda: score_cam(None, _x(1), "act")):
        _message(InvalidInputError, fn)


class SelfStandardising(Tiny):
    """Divides each input by its own standard deviation: finite on images, NaN on the all-zero input that
    Score-CAM uses as its baseline."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x / x.flatten(1).std(dim=1)[:, None, None, None])


def test_score_cam_reports_nan_scores_instead_of_a_constant_map() -> None:
    model, x = SelfStandardising(), _x(1)
    assert torch.isfinite(model(x)).all()
    text = _message(NonFiniteError, lambda: score_cam(model, x, "act", optimize=False))
    assert "raw map" in text
