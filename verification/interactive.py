"""What an interactive front end (the dashboard, a notebook) decides before it calls the API: which methods
one pass computes together, the settings that keep a view responsive, what a map explains, which layers and
reference maps there are to show, and which images count as labelled.

These are rules, not drawing: the dashboard (``ui/``) only caches and draws what they return, so a notebook
that follows the same rules sees the same maps and numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np
import torch

from verification.batch import scan_images, scan_labelled
from verification.cam import default_target_layer, list_layers, list_methods, method_labels
from verification.cam.methods import METHODS
from verification.cam.records import CamResult
from verification.cam.targets import ClassLogit, MultiLabel, SegmentationTarget, Target, output_tensor
from verification.errors import ImageLoadError
from verification.io.images import to_tensor
from verification.io.records import LoadedImage, LoadedModel
from verification.reference import ReferenceBundle
from verification.verdict import LineResult, VerificationReport
from verification.verdict.api import reference_maps

__all__ = [
    "ALL_METHODS",
    "ATTRIBUTION_METHODS",
    "DEFAULT_METHOD",
    "EXTRA_CAM_METHODS",
    "INTERACTIVE_OPTIONS",
    "METHOD_LABELS",
    "MIN_CSCORE_IMAGES",
    "ONE_PASS_METHODS",
    "TargetChoice",
    "can_split",
    "charted_line",
    "folder_images",
    "labelled_for_classes",
    "labels_or_none",
    "layer_choices",
    "method_of",
    "method_options",
    "occlusion_grid",
    "per_label_method",
    "reference_map",
    "segmentation_logits",
    "split_result",
]

# ---------------------------------------------------------------------------------------------- methods

# The gradient family (capture and multi-scale methods) comes from one forward and one backward (multi-scale
# Grad-CAM++ adds its depths to the same capture), so a front end computes and caches those maps together and
# switching between them never recomputes.
ONE_PASS_METHODS: tuple[str, ...] = (*list_methods("capture"), *list_methods("multiscale"))
EXTRA_CAM_METHODS: tuple[str, ...] = tuple(list_methods("perturbation"))
ATTRIBUTION_METHODS: tuple[str, ...] = tuple(list_methods("attribution"))
ALL_METHODS: tuple[str, ...] = ONE_PASS_METHODS + EXTRA_CAM_METHODS + ATTRIBUTION_METHODS
DEFAULT_METHOD = "gradcam"
# Score-CAM in its fast mode (at most 64 masked forwards per image: cluster medoids, then a search for the
# masks that keep the class; see verification.cam.scorecam) keeps a view responsive; the CLI runs exact.
INTERACTIVE_OPTIONS: dict[str, dict[str, object]] = {"scorecam": {"mode": "fast", "k": 64}}
# What a view adds to the registry's labels: the interactive settings and what a user should expect.
_LABEL_NOTES = {
    "eigencam": " (class-agnostic)",
    "scorecam": " (fast, 64 forwards)",
    "ablationcam": " (slow)",
    "integrated_gradients": " (slow)",
    "occlusion": " (13×13 patches)",
}
METHOD_LABELS: dict[str, str] = {
    name: label + _LABEL_NOTES.get(name, "") for name, label in method_labels().items()
}


def occlusion_grid(size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Occlusion patches of 1/7 of the side moved by half a patch: 13 × 13 forwards (the backend's finer
    default, 1/14 by 1/28, needs 27 × 27 and is meant for batch runs)."""
    win = (max(1, size[0] // 7), max(1, size[1] // 7))
    return {"window": win, "stride": (max(1, win[0] // 2), max(1, win[1] // 2))}


def method_options(method: str, input_size: tuple[int, int]) -> dict[str, Mapping[str, object]] | None:
    """``compute_cams(options=...)`` for one method run interactively (:data:`INTERACTIVE_OPTIONS`, the
    occlusion grid for the model's input size); None where the method runs with its defaults."""
    options: dict[str, Mapping[str, object]] = {
        **INTERACTIVE_OPTIONS,
        "occlusion": occlusion_grid(input_size),
    }
    return {method: options[method]} if method in options else None


def per_label_method(method: str) -> bool:
    """Whether ``method`` is one of the one-pass gradient maps that
    :func:`verification.multilabel.label_cams` computes per label."""
    spec = METHODS.get(method)
    return spec is not None and spec.kind == "capture"


def method_of(bundle: ReferenceBundle | None) -> str:
    """The method to compare models with: the reference bundle's (the maps its bands were calibrated on),
    else :data:`DEFAULT_METHOD`."""
    return bundle.method if bundle is not None and bundle.method else DEFAULT_METHOD


# ---------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetChoice:
    """What the map explains, hashable (a cache key): a class logit (None: the predicted class; for a
    multi-label model, probabilities by sigmoid), or for a segmentation model the pixels of ``cls`` whose
    probability is at least ``threshold``."""

    kind: Literal["logit", "multilabel", "segmentation"] = "logit"
    cls: int | None = None
    threshold: float = 0.5

    def build(self) -> Target:
        if self.kind == "segmentation":
            return SegmentationTarget(self.cls, threshold=self.threshold)
        if self.kind == "multilabel":
            return MultiLabel(self.cls)
        return ClassLogit(self.cls)

    def region(self, logits: torch.Tensor) -> np.ndarray:
        """The (H, W) bool region a segmentation target sums over, from (1, C, H, W) logits (the backend's
        rule: pixels of ``cls`` at or above ``threshold``)."""
        return SegmentationTarget(self.cls, threshold=self.threshold).region(logits)[0].numpy()


def segmentation_logits(model: LoadedModel, image: LoadedImage) -> torch.Tensor:
    """(1, C, H, W) float logits of a segmentation model for one image (no gradients)."""
    with torch.inference_mode():
        return output_tensor(model.module(to_tensor(image, model))).float()


# ---------------------------------------------------------------------------------------------- batches

# The per-sample fields of a CamResult that split_result knows how to take one sample of.
_CAM_FIELDS = frozenset(
    {"method", "layer", "raw", "maps", "targets", "target_kind", "logits", "probs", "constant"}
)


def can_split() -> bool:
    """Whether :func:`split_result` knows every field of ``CamResult`` (False when the record gained one: then
    a batched result must not be split, so that nothing wrong is ever kept)."""
    return {f.name for f in dataclasses.fields(CamResult)} - {"provenance"} == _CAM_FIELDS


def split_result(result: CamResult, j: int) -> CamResult:
    """Sample ``j`` of a batched result, as a one-image result (copies: the batch can be freed)."""
    sl = slice(j, j + 1)
    return replace(
        result,
        raw=result.raw[sl].copy(),
        maps=result.maps[sl].copy(),
        targets=(result.targets[j],),
        logits=result.logits[sl].copy(),
        probs=result.probs[sl].copy(),
        constant=result.constant[sl].copy(),
        provenance=dict(result.provenance),
    )


# ---------------------------------------------------------------------------------------------- what to show


def layer_choices(model: LoadedModel) -> tuple[dict[str, str], str]:
    """The spatial layers a map can be taken at, deepest first, as {dotted name: "C×h×w"}, and the default
    target layer. Runs the model once on a zero input: hold the model's lock."""
    shape = (1, model.in_channels, *model.input_size)
    infos = list_layers(model.module, shape)
    default = default_target_layer(model.module, shape)
    spatial = {
        info.name: "×".join(str(s) for s in info.output_shape[1:])
        for info in reversed(infos)
        if info.spatial and info.output_shape is not None
    }
    return spatial, default


def reference_map(bundle: ReferenceBundle, class_name: str) -> np.ndarray | None:
    """The reference map (h, w) in [0, 1] of a class, or None when the bundle has none for it (an unknown
    class, or no reference image of it): the report's :func:`verification.verdict.api.reference_maps`."""
    return reference_maps(bundle).get(class_name)


def charted_line(report: VerificationReport) -> LineResult | None:
    """The deciding line to chart beside a verdict: E3 (attention outside the anatomy, what a heatmap
    shows) when it is among them, else the first; None when none decided or it is E0 (a pass rate without a
    threshold band)."""
    keys = report.deciding_lines
    if not keys:
        return None
    line = report.line("E3" if "E3" in keys else keys[0])
    return None if line is None or line.key == "E0" else line


# ---------------------------------------------------------------------------------------------- labels


class Labelled(Protocol):
    @property
    def label(self) -> str | None: ...


L = TypeVar("L", bound=Labelled)

MIN_CSCORE_IMAGES = 4
"""The fewest labelled images of the series' classes a C-Score is tracked on (the dashboard's floor since its
first release; a class's gold list needs two images, so below this no two classes can both have one)."""


def labels_or_none(items: Sequence[Labelled]) -> list[str | None] | None:
    """The items' labels for :func:`verification.verify`, or None when none of them has one (an unlabelled
    run: no accuracy line, rather than one with every image unlabelled)."""
    return [item.label for item in items] if any(item.label for item in items) else None


def labelled_for_classes(
    items: Sequence[L], class_names: Sequence[str], *, advice: str, minimum: int = MIN_CSCORE_IMAGES
) -> list[L]:
    """The items labelled with one of ``class_names``; an ``ImageLoadError`` ending in ``advice`` when fewer
    than ``minimum`` are."""
    labelled = [item for item in items if item.label in class_names]
    if len(labelled) < minimum:
        raise ImageLoadError(
            f"The C-Score needs labelled images of the checkpoints' classes ({', '.join(class_names)}): "
            f"{advice}."
        )
    return labelled


def folder_images(root: Path) -> tuple[list[Path], list[str | None]]:
    """The images of a folder and their labels: one subfolder per class gives labels (the subfolder's
    name), otherwise every image is unlabelled. An unreadable folder is an ``ImageLoadError``."""
    try:
        if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
            paths, class_names = scan_labelled(root)
            return paths, list(class_names)
        paths = scan_images([root])
        return paths, [None] * len(paths)
    except (OSError, ValueError) as exc:  # OSError: missing, not a folder, no permission to list it
        raise ImageLoadError(str(exc)) from exc
