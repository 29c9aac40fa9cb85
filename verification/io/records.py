"""Records produced by the loaders: what a model or an image is, with provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import nn

SourceFormat = Literal["architecture", "safetensors", "state_dict", "export", "pickle", "module"]
Task = Literal["classification", "multilabel", "segmentation"]


def placeholder_class_names(n: int) -> tuple[str, ...]:
    """The names a model without class names gets: ``class_0`` … ``class_{n-1}``."""
    return tuple(f"class_{i}" for i in range(n))


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for verification.

    ``module`` is in eval mode. ``in_channels``, ``input_size`` (H, W), ``mean``/``std`` (one value per input
    channel) describe the preprocessing the model expects. ``class_names`` has one entry per output channel;
    ``garbage_class`` names the output that means "rejected input" when the model has one.
    """

    module: nn.Module
    in_channels: int
    input_size: tuple[int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source_format: SourceFormat
    content_hash: str
    architecture: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    task: Task = "classification"
    garbage_class: str | None = None
    name: str = "model"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, index: int) -> str:
        """The name of output ``index``, or the index as text when the model has no such output."""
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)

    @property
    def min_batch(self) -> int:
        """The fewest rows one forward accepts (1 except for some torch.export programs)."""
        from verification.cam.chunking import batch_limits

        return batch_limits(self.module)[0]

    @property
    def max_batch(self) -> int | None:
        """The most rows one forward accepts; None: no limit. Read once at load (torch.export programs)."""
        from verification.cam.chunking import batch_limits

        return batch_limits(self.module)[1]

    @property
    def fixed_batch(self) -> int | None:
        """The one batch size a program exported with a static batch accepts; None when it accepts more."""
        from verification.cam.chunking import fixed_batch

        return fixed_batch(self.module)

    @property
    def garbage_index(self) -> int | None:
        if self.garbage_class is None:
            return None
        return self.class_names.index(self.garbage_class)


@dataclass(frozen=True)
class LoadedImage:
    """An image as read from disk.

    ``pixels`` is float32 in [0, 1], shape (H, W) for grayscale or (H, W, 3) for colour, after DICOM rescale
    and windowing (MONOCHROME1 already inverted so that dense tissue is bright). ``display`` is the uint8
    version of the same picture for drawing. ``metadata`` holds only non-identifying acquisition facts;
    ``notices`` are things the user should be told (first frame of a multi-frame file, alpha dropped, ...).
    """

    pixels: np.ndarray
    display: np.ndarray
    name: str
    source_format: str
    content_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)
    notices: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))
