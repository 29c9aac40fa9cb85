"""Batch limits and the one chunking helper (verification/cam/chunking.py), on models that refuse other batch
sizes: every batched computation gives the unrestricted model's numbers."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from verification.cam import compute_cams
from verification.cam.attribution import compute_attribution
from verification.cam.chunking import (
    batch_limits,
    chunk_bounds,
    export_batch_limits,
    fixed_batch,
    limit_chunk,
    pad_rows,
    run_chunked,
    set_batch_limits,
)
from verification.features import capture_features
from verification.io.models import load_model_bytes


class Net(nn.Module):
    """A small CNN; ``only`` set: refuses any batch of another size (as a static-batch export does)."""

    def __init__(self, only: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.only = only
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU()
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        if self.only is not None and x.shape[0] != self.only:
            raise RuntimeError(f"Expected input at *args[0].shape[0] to be equal to {self.only}")
        return self.head(self.features(x).mean(dim=(2, 3)))


def _pair(only: int) -> tuple[Net, Net]:
    free, fixed = Net(), Net(only)
    fixed.load_state_dict(free.state_dict())
    set_batch_limits(fixed, only, only)
    return free.eval(), fixed.eval()


def test_limits_recorded_and_read() -> None:
    free, fixed = _pair(2)
    assert batch_limits(free) == (1, None)
    assert fixed_batch(free) is None
    assert batch_limits(fixed) == (2, 2)
    assert fixed_batch(fixed) == 2
    assert list(chunk_bounds(fixed, 5)) == [(0, 2), (2, 4), (4, 5)]
    assert list(chunk_bounds(free, 5)) == [(0, 5)]
    assert list(chunk_bounds(free, 5, size=3)) == [(0, 3), (3, 5)]
    assert limit_chunk(fixed, None) == 2
    assert limit_chunk(fixed, 32) == 2
    assert limit_chunk(free, None) is None
    x = torch.arange(3.0).view(3, 1)
    assert pad_rows(fixed, x[:1]).tolist() == [[0.0], [0.0]]  # the last row repeated up to min_batch
    assert pad_rows(fixed, x).shape[0] == 3


def test_run_chunked_splits_pads_and_trims() -> None:
    _, fixed = _pair(2)
    seen: list[int] = []

    def fn(t: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        seen.append(int(t.shape[0]))
        return t * 2, {"s": t.sum(dim=1)}

    x = torch.arange(10.0).view(5, 2)
    out, extra = run_chunked(fixed, x, fn)
    assert seen == [2, 2, 2]  # the last chunk (1 row) padded to 2
    assert torch.equal(out, x * 2)
    assert torch.equal(extra["s"], x.sum(dim=1))
    seen.clear()
    free = Net()
    run_chunked(free, x, fn)
    assert seen == [5]  # no limits: one call with the whole batch


def test_gradient_and_perturbation_methods_match_unrestricted_model() -> None:
    free, fixed = _pair(2)
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    targets = [2, 0, 1, 1, 2]
    opts: dict[str, dict[str, Any]] = {"scorecam": {"mode": "exact"}, "ablationcam": {"chunk_size": 3}}
    methods = ("gradcam", "gradcampp", "layercam", "scorecam", "ablationcam")
    a = compute_cams(free, x, methods=methods, layers=["features.3"], target=targets, options=opts)
    b = compute_cams(fixed, x, methods=methods, layers=["features.3"], target=targets, options=opts)
    for ra, rb in zip(a, b):
        assert list(rb.targets) == targets
        np.testing.assert_allclose(ra.raw, rb.raw, rtol=1e-5, atol=1e-6, err_msg=ra.method)
        np.testing.assert_allclose(ra.logits, rb.logits, rtol=1e-5, atol=1e-6)
    for method in ("saliency", "integrated_gradients", "occlusion"):
        fa = compute_attribution(free, x, method, target=targets, n_steps=4)
        fb = compute_attribution(fixed, x, method, target=targets, n_steps=4)
        np.testing.assert_allclose(fa.raw, fb.raw, rtol=1e-4, atol=1e-6, err_msg=method)
    feats_a = capture_features(free, x, ["features.1", "features.3"])
    feats_b = capture_features(fixed, x, ["features.1", "features.3"])
    for name in feats_a:
        torch.testing.assert_close(feats_a[name], feats_b[name])


def _export(net: nn.Module, x: Tensor, dynamic: Any = None) -> bytes:
    buf = io.BytesIO()
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=dynamic), buf)
    return buf.getvalue()


def test_export_limits_read_once_at_load() -> None:
    net = Net().eval()
    x = torch.randn(3, 1, 16, 16)
    static = load_model_bytes(_export(net, x[:1]), "s.pt2", sidecar_json={"input_size": [16, 16]})
    assert (static.min_batch, static.max_batch, static.fixed_batch) == (1, 1, 1)
    ranged = load_model_bytes(
        _export(net, x, ({0: torch.export.Dim("batch", min=2, max=8)},)),
        "d.pt2",
        sidecar_json={"input_size": [16, 16]},
    )
    assert (ranged.min_batch, ranged.max_batch, ranged.fixed_batch) == (2, 8, None)
    # the batch of 3 with per-sample targets: per chunk of 1, and padded from 1 to 2 rows
    (ref,) = compute_cams(net, x, target=[0, 1, 2], layers=["features.3"])
    for model in (static, ranged):
        (res,) = compute_cams(model, x, target=[0, 1, 2], layers=["features.3"])
        np.testing.assert_allclose(res.raw, ref.raw, rtol=1e-4, atol=1e-6)
        (one,) = compute_cams(model, x[:1], target=[2], layers=["features.3"])
        (one_ref,) = compute_cams(net, x[:1], target=[2], layers=["features.3"])
        np.testing.assert_allclose(one.raw, one_ref.raw, rtol=1e-4, atol=1e-6)


def test_export_batch_limits_from_shapes() -> None:
    assert export_batch_limits((), {}) == (1, None)
    assert export_batch_limits((4, 1, 8, 8), {}) == (4, 4)

    class Bounds:
        def __init__(self, lower: Any, upper: Any) -> None:
            self.lower, self.upper = lower, upper

    class Sym:
        def __init__(self, expr: str) -> None:
            self.node = type("N", (), {"expr": expr})()

    from torch.utils._sympy.numbers import int_oo

    assert export_batch_limits((Sym("s0"), 1), {"s0": Bounds(0, int_oo)}) == (1, None)
    assert export_batch_limits((Sym("s0"), 1), {"s0": Bounds(2, 16)}) == (2, 16)
    assert export_batch_limits((Sym("s1"), 1), {"s0": Bounds(2, 16)}) == (1, None)


@pytest.mark.parametrize("only", [1, 3])
def test_verify_forwards_go_through_the_helper(only: int) -> None:
    """E3/E4/E6 forwards (measure.forward_probs, faithfulness) on a model that takes only ``only`` rows."""
    from verification.faithfulness import deletion_insertion
    from verification.io.records import LoadedModel
    from verification.verdict.measure import forward_probs

    free, fixed = _pair(only)
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    kw: dict[str, Any] = {
        "in_channels": 1,
        "input_size": (16, 16),
        "class_names": ("a", "b", "c"),
        "mean": (0.5,),
        "std": (0.25,),
        "source_format": "module",
        "content_hash": "x",
    }
    pa = forward_probs(LoadedModel(module=free, **kw), x)
    pb = forward_probs(LoadedModel(module=fixed, **kw), x)
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)
    maps = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(6))
    ca = deletion_insertion(free, x, maps, steps=3)
    cb = deletion_insertion(fixed, x, maps, steps=3)
    np.testing.assert_allclose(ca.deletion, cb.deletion, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ca.insertion, cb.insertion, rtol=1e-5, atol=1e-6)
