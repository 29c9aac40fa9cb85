"""Concurrent calls on ONE shared model give exactly the single-threaded results (issue #14, item 6).

Before the backend owned a per-model lock and scoped its hooks to their thread, 8 threads × 50 calls of
``compute_cams`` on one model gave 6 ``ModelForwardError: 'features'`` and 49 wrong maps out of 400 calls.
Each test starts its threads together at a barrier and repeats the calls, then compares every result with
the single-threaded one bit for bit. The model is left in **train** mode on purpose: every call flips it to
eval and back, so a call that restored the flags while another was mid-forward would give batch-norm batch
statistics (different numbers) and move the running statistics, both of which are checked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from verification.cam import capture, compute_cams
from verification.cam.concurrency import model_lock, this_thread_only
from verification.cam.layers import list_layers
from verification.cam.scorecam import ablation_cam, score_cam
from verification.faithfulness import deletion_insertion
from verification.metrics import compute_metrics

THREADS = 8
ROUNDS = 6
FOREIGN = 40  # direct forwards per round in the caller's own threads


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


def _model() -> Net:
    torch.manual_seed(0)
    m = Net()
    bn = m.features[1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.running_mean is not None
    assert bn.running_var is not None
    with torch.no_grad():  # non-trivial running statistics, so batch statistics would give other numbers
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return m.train()


def _inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 12, 12, generator=g) for _ in range(THREADS)]


def _hammer(
    work: Callable[[int], Any],
    expected: list[Any],
    same: Callable[[Any, Any], bool],
    n_threads: int = THREADS,
) -> None:
    """Run ``work(i)`` in ``n_threads`` threads started together, ROUNDS times each; every result must equal
    ``expected[i]``. Errors and mismatches are collected and reported together."""
    barrier = threading.Barrier(n_threads)
    errors: list[str] = []
    wrong: list[int] = []

    def run(i: int) -> None:
        barrier.wait()
        for _ in range(ROUNDS):
            try:
                got = work(i)
            except Exception as exc:  # reported below with the others
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if not same(got, expected[i]):
                wrong.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = n_threads * ROUNDS
    assert not errors, f"{len(errors)} of {calls} concurrent calls raised, e.g. {errors[:2]}"
    assert not wrong, f"{len(wrong)} of {calls} concurrent calls differ from the single-threaded result"


def _maps(results: list[Any]) -> list[np.ndarray]:
    return [r.maps for r in results]


def _same_maps(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_untouched(m: nn.Module, before: dict[str, torch.Tensor]) -> None:
    assert all(mod.training for mod in m.modules()), "train flags not restored"
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "running statistics moved"
    assert all(not mod._forward_hooks for mod in m.modules()), "a hook was left on the model"


@pytest.mark.parametrize("n_threads", [4, 8])
def test_compute_cams_gradient_family_concurrently(n_threads: int) -> None:
    m, xs = _model(), _inputs()
    methods = ["gradcam", "gradcampp", "layercam", "eigencam", "ms_gradcampp"]
    ms = ["features.0", "features.2", "features.4"]

    def work(i: int) -> list[np.ndarray]:
        return _maps(compute_cams(m, xs[i], methods=methods, layers="features", ms_layers=ms))

    before = _state(m)
    expected = [work(i) for i in range(n_threads)]
    _hammer(work, expected, _same_maps, n_threads)
    _assert_untouched(m, before)


def test_perturbation_methods_and_layer_scan_concurrently() -> None:
    m, xs = _model(), _inputs()

    def work(i: int) -> list[np.ndarray]:
        # the layer scan (default layer) runs first for each new input size: vary it per thread
        x = xs[i] if i % 2 else torch.nn.functional.interpolate(xs[i], size=(10 + i, 10 + i))
        layers = [layer.name for layer in list_layers(m, x.shape[1:]) if layer.spatial]
        sc = score_cam(m, x, "features", chunk_size=4, optimize=i % 2 == 0)
        ab = ablation_cam(m, x, "features.2", chunk_size=4)
        cam = compute_cams(m, x)[0]  # default target layer: the scan's answer
        return [np.array(layers), sc.maps, ab.maps, cam.maps]

    before = _state(m)
    expected = [work(i) for i in range(THREADS)]
    _hammer(work, expected, _same_maps)
    _assert_untouched(m, before)


def test_metric_functions_concurrently() -> None:
    m, xs = _model(), _inputs()
    cams = [compute_cams(m.eval(), x, methods=["gradcam"], layers="features")[0].maps for x in xs]
    ref = cams[0][0]

    def work(i: int) -> list[np.ndarray]:
        vals = compute_metrics(cams[i], ref, size=(16, 16))
        curves = deletion_insertion(m, xs[i], cams[i], steps=4)
        return [*(vals[k] for k in sorted(vals)), curves.deletion, curves.insertion]

    def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
        return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))

    expected = [work(i) for i in range(THREADS)]
    _hammer(work, expected, same)


def test_hooks_do_not_touch_a_callers_own_forward_in_another_thread() -> None:
    """The caller runs ``model(x)`` itself in other threads while CAMs are computed: those predictions stay
    exact (Ablation-CAM's zeroing hook acts only on its own call) and the CAMs do not pick up the foreign
    activations (the capture hook records only its own call's)."""
    m, xs = _model(), _inputs()
    m.eval()
    with torch.no_grad():
        plain = [m(x) for x in xs]

    def work(i: int) -> list[np.ndarray]:
        if i % 2:  # many short forwards, so some fall inside the other threads' hooked windows
            with torch.no_grad():
                return [m(xs[i]).numpy() for _ in range(FOREIGN)]
        return [*_maps(compute_cams(m, xs[i], methods=["gradcam"], layers="features")), _ablate(m, xs[i])]

    def _ablate(model: nn.Module, x: torch.Tensor) -> np.ndarray:
        return ablation_cam(model, x, "features.2", chunk_size=2).maps

    expected = [[plain[i].numpy()] * FOREIGN if i % 2 else work(i) for i in range(THREADS)]
    _hammer(work, expected, _same_maps)


def test_capture_is_exclusive_per_model_but_not_across_models() -> None:
    """The lock is per model: while one thread holds model A's lock, a capture on model B completes and a
    capture on A waits for it."""
    a, b = _model().eval(), _model().eval()
    x = _inputs()[0]
    assert model_lock(a) is model_lock(a)
    assert model_lock(a) is not model_lock(b)
    done: dict[str, bool] = {}

    def run(name: str, model: nn.Module) -> None:
        capture(model, x, ["features"])
        done[name] = True

    with model_lock(a):
        tb = threading.Thread(target=run, args=("b", b))
        ta = threading.Thread(target=run, args=("a", a))
        tb.start()
        ta.start()
        tb.join(timeout=30)
        ta.join(timeout=0.5)
        assert done == {"b": True}, "model B waited for A's lock, or A ran while its lock was held"
    ta.join(timeout=30)
    assert done == {"a": True, "b": True}


def test_thread_scoped_hook_ignores_other_threads() -> None:
    seen: list[int] = []
    layer = nn.Identity()
    handle = layer.register_forward_hook(this_thread_only(lambda *_: seen.append(threading.get_ident())))
    try:
        t = threading.Thread(target=layer, args=(torch.zeros(1),))
        t.start()
        t.join()
        layer(torch.zeros(1))
    finally:
        handle.remove()
    assert seen == [threading.get_ident()]


@pytest.mark.parametrize("fn", [compute_cams, score_cam])
def test_non_model_first_argument_still_gets_its_typed_error(fn: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"):
        fn("not a model", torch.zeros(1, 3, 8, 8), *(["features"] if fn is score_cam else []))
