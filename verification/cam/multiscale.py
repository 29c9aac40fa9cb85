"""MS Grad-CAM++: Grad-CAM++ at several depths from the same single backward, fused at input size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from verification.cam.layers import stage_outputs
from verification.cam.methods import postprocess

Fuse = Literal["mean", "product"]


def default_ms_layers(model: nn.Module, input_shape: Sequence[int], count: int = 3) -> list[str]:
    """**default** depths: the outputs of the last ``count`` stages (resnet: layer2, layer3, layer4)."""
    return stage_outputs(model, input_shape, count)


def ms_gradcampp(
    layer_maps: list[Tensor], size: tuple[int, int], fuse: Literal["mean", "product"] = "mean"
) -> Tensor:
    """Fuse Grad-CAM++ raw maps from several depths: each ReLU'd, upsampled to ``size`` and min-max normalised
    (a constant one becomes zeros), then the mean (**default**) or the product. Returns (N, H, W)."""
    if not layer_maps:
        raise ValueError("multi-scale Grad-CAM++ needs at least one layer")
    normed = torch.stack([postprocess(m, size, normalize=True)[0] for m in layer_maps])
    if fuse == "mean":
        return normed.mean(dim=0)
    if fuse == "product":
        return normed.prod(dim=0)
    raise ValueError(f"fuse must be 'mean' or 'product', got {fuse!r}")
