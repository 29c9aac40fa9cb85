"""Architectures by name: torchvision classification families, timm models, and the project's small U-Net.

Nothing here downloads weights: torchvision builders are called without ``weights``, timm with
``pretrained=False``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from verification.errors import ModelLoadError

TORCHVISION_FAMILIES: tuple[str, ...] = (
    "resnet",
    "resnext",
    "wide_resnet",
    "densenet",
    "efficientnet_",
    "mobilenet_v2",
    "mobilenet_v3_",
    "vgg",
    "convnext_",
    "regnet_",
)
"""Name prefixes of the torchvision classification families that ``build_architecture`` accepts."""

SEGMENTATION_ARCHITECTURES: frozenset[str] = frozenset({"unet"})


@dataclass(frozen=True)
class Param:
    """One accepted architecture argument: its type and inclusive bounds (numbers) or choices."""

    kind: type
    lo: float | None = None
    hi: float | None = None

    def check(self, arch: str, key: str, value: Any) -> Any:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ModelLoadError(
                    f"arch_kwargs '{key}' of '{arch}' must be true or false, got {_short(value)}"
                )
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ModelLoadError(f"arch_kwargs '{key}' of '{arch}' must be a number, got {_short(value)}")
        if self.kind is int and not float(value).is_integer():
            raise ModelLoadError(f"arch_kwargs '{key}' of '{arch}' must be an integer, got {_short(value)}")
        number = int(value) if self.kind is int else float(value)
        if (
            not math.isfinite(number)
            or (self.lo is not None and number < self.lo)
            or (self.hi is not None and number > self.hi)
        ):
            raise ModelLoadError(
                f"{key} must be between {self.lo:g} and {self.hi:g}, got {_short(value)} "
                f"(arch_kwargs of '{arch}')"
            )
        return number


_PROB = Param(float, 0.0, 0.99)
_FLAG = Param(bool)
# Accepted keyword arguments per family (name prefix): only sizes and regularisation, never paths,
# callables or anything a builder would read from disk or download (timm's checkpoint_path, pretrained_cfg).
ARCH_KWARGS: dict[str, dict[str, Param]] = {
    "resnet": {"zero_init_residual": _FLAG},
    "resnext": {"zero_init_residual": _FLAG},
    "wide_resnet": {"zero_init_residual": _FLAG},
    "densenet": {"drop_rate": _PROB, "memory_efficient": _FLAG},
    "efficientnet_": {"dropout": _PROB, "stochastic_depth_prob": _PROB},
    "mobilenet_v2": {
        "width_mult": Param(float, 0.1, 2.0),
        "round_nearest": Param(int, 1, 32),
        "dropout": _PROB,
    },
    "mobilenet_v3_": {
        "width_mult": Param(float, 0.1, 2.0),
        "reduced_tail": _FLAG,
        "dilated": _FLAG,
        "dropout": _PROB,
    },
    "vgg": {"dropout": _PROB, "init_weights": _FLAG},
    "convnext_": {"stochastic_depth_prob": _PROB, "layer_scale": Param(float, 1e-8, 1.0)},
    "regnet_": {},
    "unet": {"base": Param(int, 1, 128), "depth": Param(int, 1, 5)},
    "timm/": {"drop_rate": _PROB, "drop_path_rate": _PROB},
}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def check_arch_kwargs(name: str, arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``arch_kwargs`` checked against :data:`ARCH_KWARGS` for ``name``: unknown keys, wrong types and
    out-of-bound values raise ModelLoadError (with a message of bounded length)."""
    family = next((f for f in ARCH_KWARGS if name == f or name.startswith(f)), None)
    allowed = ARCH_KWARGS.get(family, {}) if family is not None else {}
    unknown = [str(k) for k in arch_kwargs if k not in allowed]
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        shown = ", ".join(_short(k, 40) for k in unknown[:5]) + (
            f" (+{len(unknown) - 5})" if len(unknown) > 5 else ""
        )
        raise ModelLoadError(
            f"architecture '{_short(name, 60)}' does not accept arguments {shown}; accepted: {accepted}"
        )
    return {key: allowed[key].check(name, key, value) for key, value in arch_kwargs.items()}


class _DoubleConv(nn.Sequential):
    """(conv3x3 → BatchNorm → ReLU) × 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=False),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=False),
        )


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al., MICCAI 2015) for segmentation demos.

    ``depth`` down/up levels with widths ``base · 2^i``; input (N, in_channels, H, W) of any size, output
    (N, num_classes, H, W) logits. Module names: ``down.{i}``, ``bottleneck``, ``up.{i}``, ``decode.{i}``,
    ``head`` (registered last, so the last Conv2d is the classifier).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base < 1:
            raise ValueError("in_channels, num_classes and base must be positive")
        if not 1 <= depth <= 5:
            raise ValueError(f"depth must be between 1 and 5, got {depth}")
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        prev = in_channels
        for w in widths[:-1]:
            self.down.append(_DoubleConv(prev, w))
            prev = w
        self.bottleneck = _DoubleConv(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.up.append(nn.ConvTranspose2d(widths[i], widths[i - 1], kernel_size=2, stride=2))
            self.decode.append(_DoubleConv(2 * widths[i - 1], widths[i - 1]))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, decode, skip in zip(self.up, self.decode, reversed(skips)):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                # Odd input sizes: pooling floors, so pad the upsampled map back to the skip's size.
                dh = skip.shape[-2] - x.shape[-2]
                dw = skip.shape[-1] - x.shape[-1]
                x = F.pad(x, (0, dw, 0, dh))
            x = decode(torch.cat([skip, x], dim=1))
        return self.head(x)


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d for one taking ``in_channels`` inputs, keeping its other settings."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == in_channels:
                return
            if module.groups != 1:
                raise ModelLoadError(
                    f"cannot adapt grouped first convolution '{name}' to {in_channels} channels"
                )
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                kernel_size=module.kernel_size,  # type: ignore[arg-type]
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, new)
            return
    raise ModelLoadError("the architecture has no Conv2d layer to adapt to the requested input channels")


def _is_torchvision_name(name: str) -> bool:
    return name.startswith(TORCHVISION_FAMILIES)


def build_architecture(name: str, *, num_classes: int, in_channels: int = 3, **arch_kwargs: Any) -> nn.Module:
    """Build an untrained network by name (torchvision family, ``timm/<name>`` or ``unet``), in eval mode."""
    if num_classes < 1 or in_channels < 1:
        raise ModelLoadError(
            f"num_classes and in_channels must be positive (got {num_classes}, {in_channels})"
        )
    arch_kwargs = check_arch_kwargs(name, arch_kwargs)
    model: nn.Module
    try:
        if name == "unet":
            model = UNet(in_channels=in_channels, num_classes=num_classes, **arch_kwargs)
        elif name.startswith("timm/"):
            try:
                import timm
            except ImportError as exc:
                raise ModelLoadError(f"'{name}' needs the timm package, which is not installed") from exc
            timm_name = name.removeprefix("timm/")
            if not timm.is_model(timm_name):
                raise ModelLoadError(f"timm has no model called '{timm_name}'; see timm.list_models()")
            model = timm.create_model(
                timm_name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **arch_kwargs
            )
        else:
            import torchvision

            known = set(torchvision.models.list_models(module=torchvision.models))
            if name not in known or not _is_torchvision_name(name):
                supported = sorted(n for n in known if _is_torchvision_name(n))
                raise ModelLoadError(
                    f"unknown architecture '{name}'. Use one of: {', '.join(supported)}; "
                    "'timm/<model name>'; or 'unet'."
                )
            # No ``weights`` argument: the builders default to random initialisation and never download.
            model = torchvision.models.get_model_builder(name)(num_classes=num_classes, **arch_kwargs)
            if in_channels != 3:
                _replace_first_conv(model, in_channels)
    except TypeError as exc:
        raise ModelLoadError(f"architecture '{name}' does not accept arguments {arch_kwargs}: {exc}") from exc
    except ValueError as exc:
        raise ModelLoadError(f"cannot build architecture '{name}': {exc}") from exc
    return model.eval()


def default_task(architecture: str | None) -> str:
    """The task an architecture is built for: "segmentation" for the U-Net, else "classification"."""
    return "segmentation" if architecture in SEGMENTATION_ARCHITECTURES else "classification"
