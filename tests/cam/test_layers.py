"""Layer discovery and default target layers across the families the loaders accept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from verification.cam import compute_cams, default_target_layer, list_layers, stage_outputs
from verification.io.records import LoadedModel

TV = torchvision.models


def _build(name: str, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    if name == "unet":
        from verification.io.architectures import build_architecture

        return build_architecture("unet", num_classes=2, in_channels=in_channels)
    model = getattr(TV, name)(num_classes=4)
    if in_channels == 1:
        model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return model


@pytest.mark.parametrize(
    ("name", "in_channels", "expected"),
    [
        ("resnet18", 3, "layer4"),
        ("resnet18", 1, "layer4"),
        ("densenet121", 3, "features"),  # = features.norm5's tensor; the ReLU after it is functional
        ("efficientnet_b0", 3, "features"),
        ("mobilenet_v3_small", 3, "features"),
        ("vgg11", 3, "features"),  # not avgpool: adaptive pooling resamples 2×2 → 7×7
        ("convnext_tiny", 3, "features"),
        ("unet", 1, "decode.2"),  # last decoder block; the 1×1 head emits the class logits
    ],
)
def test_default_target_layer(name: str, in_channels: int, expected: str) -> None:
    model = _build(name, in_channels)
    model.train()
    assert default_target_layer(model, (in_channels, 64, 64)) == expected
    assert all(m.training for m in model.modules())  # the dry forward restored the flags
    assert all(not m._forward_hooks for m in model.modules())


def test_stage_outputs() -> None:
    assert stage_outputs(_build("resnet18"), (3, 64, 64)) == ["layer2", "layer3", "layer4"]
    dense = stage_outputs(_build("densenet121"), (3, 64, 64))
    assert dense == ["features.denseblock2", "features.denseblock3", "features"]
    assert stage_outputs(_build("convnext_tiny"), (3, 64, 64)) == ["features.3", "features.5", "features"]
    assert stage_outputs(_build("unet", 1), (1, 32, 32)) == ["decode.0", "decode.1", "decode.2"]


def test_list_layers_shapes() -> None:
    model = _build("resnet18")
    layers = {info.name: info for info in list_layers(model, (3, 64, 64))}
    assert layers["layer4"].output_shape == (1, 512, 2, 2)
    assert layers["layer4"].type == "Sequential"
    assert layers["fc"].output_shape == (1, 4)
    assert layers["layer1.0.relu"].calls == 2  # BasicBlock applies its ReLU twice
    assert layers["conv1"].input_shape == (1, 3, 64, 64)
    assert "" not in layers


def test_torch_export_unflattened_module() -> None:
    model = _build("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    dynamic = torch.export.unflatten(
        torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=16)},))
    )
    static = torch.export.unflatten(torch.export.export(model, (x[:1],)))
    ref = compute_cams(model, x, methods=["gradcam", "eigencam"])
    assert default_target_layer(dynamic, (3, 64, 64)) == "layer4"
    for exported in (dynamic, static):
        res = compute_cams(exported, x, methods=["gradcam", "eigencam"])
        for a, b in zip(ref, res):
            assert b.layer == "layer4"
            np.testing.assert_allclose(a.raw, b.raw, rtol=1e-4, atol=1e-5)
        assert all(not m._forward_hooks for m in exported.modules())


def test_loaded_model_is_accepted() -> None:
    module = _build("resnet18", 1).eval()
    loaded = LoadedModel(
        module=module,
        in_channels=1,
        input_size=(64, 64),
        class_names=("a", "b", "c", "d"),
        mean=(0.5,),
        std=(0.25,),
        source_format="architecture",
        content_hash="abc123",
    )
    x = torch.randn(1, 1, 64, 64)
    (a,) = compute_cams(loaded, x)
    (b,) = compute_cams(module, x)
    np.testing.assert_array_equal(a.raw, b.raw)
    assert a.provenance["model_hash"] == "abc123"
    assert default_target_layer(loaded, (1, 64, 64)) == "layer4"
