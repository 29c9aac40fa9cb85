"""The one-pass capture: hooks scoped to the call, the caller's model and input untouched, gradients right."""

from __future__ import annotations

import gc
import resource
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from verification.cam import capture, compute_cams
from verification.errors import LayerError, ModelForwardError

SIX = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam"]


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def _small_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=5)


def test_hooks_removed_after_success_and_failures() -> None:
    model = _small_resnet()
    x = torch.randn(2, 3, 64, 64)
    compute_cams(model, x, methods=[*SIX, "ms_gradcampp"], layers=["layer3", "layer4"])
    assert _no_hooks(model)
    with pytest.raises(LayerError, match=r"no layer named 'layer5'.*layer4"):
        compute_cams(model, x, layers=["layer5"])
    with pytest.raises(LayerError, match="spatial"):
        compute_cams(model, x, layers=["fc"])
    with pytest.raises(LayerError, match="spatial"):
        compute_cams(model, x, layers=["avgpool"])  # (N, C, 1, 1): one position is not a map
    assert _no_hooks(model)

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.conv(x)
            raise RuntimeError("boom")

    boom = Boom()
    with pytest.raises(ModelForwardError, match="boom"):
        compute_cams(boom, torch.randn(1, 3, 8, 8), layers=["conv"])
    assert _no_hooks(boom)


def test_model_grads_flags_and_input_untouched() -> None:
    model = _small_resnet()
    model.train()
    model.layer2.eval()  # a mixed state the call must give back exactly
    flags = {n: m.training for n, m in model.named_modules()}
    for i, p in enumerate(model.parameters()):
        if i % 2 == 0:
            p.grad = torch.full_like(p, 0.5)
    grads = {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}
    grad_objs = {n: p.grad for n, p in model.named_parameters()}
    stats = {n: b.clone() for n, b in model.named_buffers()}
    x = torch.randn(2, 3, 64, 64)
    x0 = x.clone()
    compute_cams(model, x, methods=SIX, layers=["layer2", "layer4"])
    assert {n: m.training for n, m in model.named_modules()} == flags
    for n, p in model.named_parameters():
        assert p.grad is grad_objs[n]
        if grads[n] is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, grads[n])
    for n, b in model.named_buffers():  # eval mode during the call: batch-norm statistics not updated
        assert torch.equal(b, stats[n]), n
    assert torch.equal(x, x0)
    assert not x.requires_grad
    assert x.grad is None


def test_input_not_mutated_by_an_inplace_first_layer() -> None:
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(1, 3, 8, 8)
    model(x.clone())
    x0 = x.clone()
    compute_cams(model, x, layers=["1"])
    assert torch.equal(x, x0)


def test_frozen_model_no_grad_and_inference_mode_give_the_same_maps() -> None:
    model = _small_resnet()
    x = torch.randn(2, 3, 64, 64)
    ref = compute_cams(model, x, methods=SIX, layers=["layer3", "layer4"])
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = compute_cams(model, x, methods=SIX, layers=["layer3", "layer4"])
    with torch.no_grad():
        nograd = compute_cams(model, x, methods=SIX, layers=["layer3", "layer4"])
    with torch.inference_mode():
        xi = x.clone()
        infer = compute_cams(model, xi, methods=SIX, layers=["layer3", "layer4"])
    for a, b, c, d in zip(ref, frozen, nograd, infer):
        assert (a.method, a.layer) == (b.method, b.layer)
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a.raw, c.raw, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a.raw, d.raw, rtol=1e-5, atol=1e-7)
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert float(np.abs(ref[0].raw).max()) > 0


def test_inplace_ops_after_the_layer_do_not_alter_the_capture() -> None:
    """resnet's BasicBlock does ``out = bn2(out); out += identity; relu_(out)``. The capture at ``bn2`` must
    be bn2's own output, and its gradient that of bn2's output: by the chain rule through the block,
    ``g_bn2 = g_block · 1[A_bn2 + identity > 0]`` with identity = the block input (maxpool's output)."""
    model = _small_resnet().eval()
    x = torch.randn(2, 3, 64, 64)
    cap = capture(model, x, ["maxpool", "layer1.0.bn2", "layer1.0"])
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        blk = model.layer1[0]
        bn2 = blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(stem)))))
    torch.testing.assert_close(cap.activations["layer1.0.bn2"], bn2)
    torch.testing.assert_close(cap.activations["maxpool"], stem)
    expected = cap.gradients["layer1.0"] * ((bn2 + stem) > 0)
    torch.testing.assert_close(cap.gradients["layer1.0.bn2"], expected)
    assert cap.gradients["layer1.0.bn2"].abs().sum() > 0


def test_densenet_features_is_the_module_output() -> None:
    """torchvision's DenseNet applies ``F.relu(features, inplace=True)`` after ``features``; we keep the
    module's own output (the norm5 tensor, with its negative values), not the silently edited one."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(num_classes=3).eval()
    cap = capture(model, torch.randn(1, 3, 64, 64), ["features", "features.norm5"], gradients=False)
    torch.testing.assert_close(cap.activations["features"], cap.activations["features.norm5"])
    assert float(cap.activations["features"].min()) < 0


class _TupleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y.mean()


class _TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = _TupleBlock()
        self.act = nn.ReLU()  # used twice: a reused module
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, extra = self.block(x)
        y = self.act(y)
        y = self.act(self.conv2(y)) + extra
        return self.fc(y.mean(dim=(2, 3)))


def test_tuple_outputs_and_reused_modules() -> None:
    torch.manual_seed(0)
    model = _TupleNet()
    x = torch.randn(2, 3, 6, 6)
    cap = capture(model, x, ["block", "act"])
    assert cap.calls == {"block": 1, "act": 2}
    with torch.no_grad():
        y = model.block.conv(x)
        last_act = torch.relu(model.conv2(torch.relu(y)))
    torch.testing.assert_close(cap.activations["block"], y)
    torch.testing.assert_close(cap.activations["act"], last_act)  # the last call
    # hand gradient at the last act: logit_c = fc(mean_hw(act + extra)) → ∂/∂act = W[c] / (h·w)
    c = torch.tensor(cap.scores.classes)
    expected = (model.fc.weight[c] / 36.0)[:, :, None, None].expand(2, 4, 6, 6)
    torch.testing.assert_close(cap.gradients["act"], expected.detach())
    assert _no_hooks(model)


def _tensor_count() -> int:
    with warnings.catch_warnings():  # isinstance on some torch module proxies warns about deprecations
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_no_memory_growth_over_200_calls() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    x = torch.randn(2, 1, 16, 16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread hand-offs would dominate on a shared machine
    try:
        _calls(model, x)
    finally:
        torch.set_num_threads(threads)


def _calls(model: nn.Module, x: torch.Tensor) -> None:
    for _ in range(20):
        compute_cams(model, x, methods=[*SIX, "ms_gradcampp"], layers=["1", "3"], ms_layers=["1", "3"])
    gc.collect()
    tensors0 = _tensor_count()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(200):
        compute_cams(model, x, methods=[*SIX, "ms_gradcampp"], layers=["1", "3"], ms_layers=["1", "3"])
    gc.collect()
    assert _tensor_count() <= tensors0
    # peak RSS (KiB) may rise only by noise: one call's working set here is well under 1 MiB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 20 * 1024
    assert _no_hooks(model)
