"""build_architecture: every supported family, 1-channel adaptation, the project U-Net, no downloads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from verification.errors import ModelLoadError
from verification.io.architectures import UNet, build_architecture

FAMILIES = [
    "resnet18",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "vgg11",
    "vgg16_bn",
    "convnext_tiny",
]


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", FAMILIES)
def test_one_channel_adaptation_replaces_only_the_first_conv(name: str) -> None:
    # Built on the meta device: the comparison is about structure, so no memory or init time is spent.
    with torch.device("meta"):
        rgb = build_architecture(name, num_classes=3, in_channels=3)
        gray = build_architecture(name, num_classes=3, in_channels=1)
        out = gray(torch.empty(2, 1, 64, 64))
    assert tuple(out.shape) == (2, 3)
    sd_rgb, sd_gray = rgb.state_dict(), gray.state_dict()
    assert list(sd_rgb) == list(sd_gray)
    conv_name, conv_gray = _first_conv(gray)
    _, conv_rgb = _first_conv(rgb)
    assert conv_gray.in_channels == 1
    for attr in ("out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
        assert getattr(conv_gray, attr) == getattr(conv_rgb, attr), attr
    assert (conv_gray.bias is None) == (conv_rgb.bias is None)
    differing = [k for k in sd_rgb if sd_rgb[k].shape != sd_gray[k].shape]
    assert differing == [f"{conv_name}.weight"]
    assert not gray.training


def test_builders_never_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a builder tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    model = build_architecture("mobilenet_v3_small", num_classes=2, in_channels=1)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2)


def test_timm_names_are_built_without_pretrained_weights() -> None:
    pytest.importorskip("timm")
    with torch.device("meta"):
        model = build_architecture("timm/resnet18", num_classes=4, in_channels=1)
        assert tuple(model(torch.empty(1, 1, 64, 64)).shape) == (1, 4)
    assert _first_conv(model)[1].in_channels == 1


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet7", {}, "unknown architecture 'resnet7'"),
        ("alexnet", {}, "unknown architecture 'alexnet'"),
        ("timm/not_a_model_xyz", {}, "timm has no model"),
        ("resnet18", {"no_such_kwarg": 1}, "does not accept arguments"),
        ("unet", {"depth": 9}, "depth must be between"),
    ],
)
def test_bad_names_and_arguments_raise_model_load_error(
    name: str, kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(ModelLoadError, match=match):
        build_architecture(name, num_classes=2, **kwargs)


@pytest.mark.parametrize(("h", "w"), [(64, 64), (37, 50)])
def test_unet_outputs_logits_at_input_size(h: int, w: int) -> None:
    torch.manual_seed(0)
    model = build_architecture("unet", num_classes=3, in_channels=1, base=4)
    assert isinstance(model, UNet)
    out = model(torch.randn(2, 1, h, w))
    assert tuple(out.shape) == (2, 3, h, w)
    names = dict(model.named_modules())
    assert {"down.0", "down.2", "bottleneck", "up.0", "decode.2", "head"} <= set(names)
    assert isinstance(names["down.0.1"], nn.BatchNorm2d)
    # the head is the last Conv2d registered, which is how the loaders find the class count
    last_conv = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    assert last_conv == "head"


def test_unet_base_sets_widths() -> None:
    model = UNet(in_channels=2, num_classes=5, base=8, depth=2)
    assert model.down[0][0].weight.shape == (8, 2, 3, 3)
    assert model.bottleneck[0].weight.shape == (32, 16, 3, 3)
    assert model.head.weight.shape == (5, 8, 1, 1)
