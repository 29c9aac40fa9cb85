"""Multi-label models: independent labels, each with its own sigmoid (issue #15).

A multi-label head (a chest X-ray model scoring 18 findings at once, say) answers K yes/no questions, not one
K-way question: its probabilities are ``σ(z_k)`` per label and need not add up to 1. The task comes from the
sidecar (``"task": "multilabel"``) or from the user; :func:`multilabel_hint` only *suggests* it — a model is
never switched silently.

* :func:`multilabel_hint`: why a model loaded as single-label looks multi-label (None when nothing does);
* :func:`label_cams`: one map per (image, label) — by default every label with p ≥ 0.5, else the top label —
  from one forward and one backward over the rows (:class:`~verification.cam.targets.LabelLogit`: the label's
  logit, as pytorch-grad-cam's ``ClassifierOutputTarget``);
* :func:`label_view`: label k's binary task as a two-class model whose logits are ``(z_k, 0)``: its softmax is
  exactly ``(σ(z_k), 1 − σ(z_k))``, its predicted class is "k" iff ``σ(z_k) ≥ 0.5`` and the Grad-CAM of its
  first class is that of ``z_k``. The per-label verdict (:mod:`verification.verdict.multilabel`) runs the
  single-label evidence lines on these views, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from verification.cam.records import CamResult
from verification.cam.targets import LabelLogit, default_labels, output_tensor
from verification.errors import InvalidInputError, ShapeError
from verification.io.records import LoadedModel

__all__ = [
    "LabelMaps",
    "build_label_reference",
    "label_cams",
    "label_probabilities",
    "label_view",
    "multilabel_hint",
    "not_label",
    "parse_label_set",
]

MIN_HINT_OUTPUTS = 2
"""A head with a single output is a binary classifier (the sigmoid of one logit), not a set of labels."""


# ------------------------------------------------------------------------------------------------- hint


def _last_leaf(module: nn.Module) -> nn.Module | None:
    leaves = [m for m in module.modules() if not list(m.children())]
    return leaves[-1] if leaves else None


def multilabel_hint(model: LoadedModel) -> str | None:
    """Why ``model`` (loaded as single-label) looks like a multi-label model, in one sentence; None when
    nothing suggests it (or the task is already "multilabel" or "segmentation").

    The signs, each one a fact about the file, never a guess from its outputs' values:

    * its last module is a ``Sigmoid`` (a softmax head ends in a ``Linear`` or a ``Softmax``);
    * it is a torchxrayvision model (``torchxrayvision.models.*``: multi-label pathology heads by design);
    * it carries a ``pathologies`` / ``op_threshs`` attribute (per-label thresholds mean independent labels).

    A model with one output is never flagged (a single sigmoid is a binary classifier)."""
    if model.task != "classification" or model.num_classes < MIN_HINT_OUTPUTS:
        return None
    module = model.module
    k = model.num_classes
    origin = type(module).__module__ or ""
    if origin.split(".")[0] == "torchxrayvision":
        return (
            f"it is a torchxrayvision model ({type(module).__name__}), whose {k} outputs are independent "
            "findings, each scored by its own sigmoid"
        )
    if isinstance(_last_leaf(module), nn.Sigmoid):
        return (
            f"its last module is a Sigmoid: its {k} outputs look like independent labels (and are already "
            "probabilities: this tool reads logits, so save the model without its final Sigmoid)"
        )
    for attr in ("op_threshs", "pathologies"):
        if getattr(module, attr, None) is not None:
            return f"it carries per-label '{attr}', the mark of {k} independent labels"
    return None


# ------------------------------------------------------------------------------------------------- labels


def label_probabilities(model: LoadedModel, x: Tensor, chunk: int = 64) -> np.ndarray:
    """σ(z) per label (N, K) for the batch ``x`` (one forward, eval mode, no gradients)."""
    from verification.cam.chunking import run_chunked
    from verification.cam.layers import eval_mode

    out = []
    with eval_mode(model.module), torch.inference_mode():
        for s in range(0, len(x), chunk):
            z = output_tensor(run_chunked(model, x[s : s + chunk], model.module))
            if z.ndim != 2:
                raise ShapeError(f"a multi-label model must return (N, labels) logits; got {tuple(z.shape)}")
            out.append(torch.sigmoid(z.float()))
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), np.float32)


def parse_label_set(value: Any, class_names: Sequence[str]) -> tuple[int, ...] | None:
    """One image's labels as indices into ``class_names``: None (unknown), a name, an index, or a sequence of
    them (an empty one: known to carry none of the labels); a string that is not a name is split on "|"
    (``"Effusion|Nodule"``). Unknown names raise InvalidInputError naming them."""
    if value is None:
        return None
    if isinstance(value, str):
        items: Sequence[Any] = [value] if value in class_names else [v for v in value.split("|") if v]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        items = [int(value)]
    elif isinstance(value, (Sequence, set, frozenset)):
        items = list(value)
    else:
        raise InvalidInputError(f"a label set must be names or indices, got {type(value).__name__}")
    out: list[int] = []
    for v in items:
        if isinstance(v, str) and v in class_names:
            out.append(list(class_names).index(v))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= int(v) < len(class_names):
            out.append(int(v))
        else:
            raise InvalidInputError(
                f"label {str(v)[:60]!r} is not one of the model's labels ({', '.join(class_names[:8])}"
                + (" …" if len(class_names) > 8 else "")
                + ")"
            )
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class LabelMaps:
    """One map per (image, label): row r explains label ``labels[r]`` of image ``images[r]``.

    ``results`` one :class:`CamResult` per (method, layer) with those rows; ``probs`` (N, K) the sigmoid per
    label of every image; ``class_names`` the model's labels."""

    images: tuple[int, ...]
    labels: tuple[int, ...]
    results: tuple[CamResult, ...]
    probs: np.ndarray
    class_names: tuple[str, ...]

    def maps_for(self, image: int, result: int = 0) -> dict[str, np.ndarray]:
        """``{label name: map (H, W)}`` of one image."""
        res = self.results[result]
        return {
            self.class_names[k]: res.maps[r]
            for r, (i, k) in enumerate(zip(self.images, self.labels))
            if i == image
        }


def label_cams(
    model: LoadedModel,
    x: Tensor,
    labels: Sequence[Sequence[int] | None] | None = None,
    *,
    methods: Sequence[str] = ("gradcam",),
    layers: Sequence[str] | str | None = None,
    threshold: float = 0.5,
    **kwargs: Any,
) -> LabelMaps:
    """Maps of a multi-label model, one per (image, label), from one forward and one backward over the rows.

    ``labels[i]``: the label indices to explain for image i; None (or ``labels`` None) → every label with
    σ ≥ ``threshold``, or the top label when none reaches it. Each map explains its label's logit
    (:class:`~verification.cam.targets.LabelLogit`): for Grad-CAM exactly pytorch-grad-cam's
    ``GradCAM(targets=[ClassifierOutputTarget(k)])``. Further keywords go to
    :func:`verification.cam.compute_cams`."""
    from verification.cam import compute_cams

    if x.ndim != 4 or x.shape[0] == 0:
        raise ShapeError(f"expected a non-empty batch (N, C, H, W), got {tuple(x.shape)}")
    probs = label_probabilities(model, x)
    chosen = default_labels(torch.from_numpy(probs), threshold)
    if labels is not None:
        if len(labels) != len(x):
            raise ShapeError(f"{len(labels)} label lists for {len(x)} images")
        chosen = tuple(
            chosen[i] if want is None else tuple(int(k) for k in want) for i, want in enumerate(labels)
        )
    rows = [(i, k) for i, ks in enumerate(chosen) for k in ks]
    bad = [k for _, k in rows if not 0 <= k < model.num_classes]
    if bad:
        raise ShapeError(f"label index {bad[0]} out of range for a model with {model.num_classes} labels")
    if not rows:
        raise InvalidInputError("no label to explain: give at least one label index per image")
    idx = torch.tensor([i for i, _ in rows], dtype=torch.long)
    target = LabelLogit([k for _, k in rows])
    results = compute_cams(model, x[idx], methods=methods, layers=layers, target=target, **kwargs)
    return LabelMaps(
        images=tuple(i for i, _ in rows),
        labels=tuple(k for _, k in rows),
        results=tuple(results),
        probs=probs.astype(np.float32),
        class_names=tuple(model.class_names),
    )


# ------------------------------------------------------------------------------------------- binary views


class _LabelHead(nn.Module):
    """Label ``index`` of ``inner`` as a two-class head: logits ``(z, 0)``. The children are ``inner``'s own
    (the same objects under the same names), so layer names, hooks and parameters are those of the model."""

    def __init__(self, inner: nn.Module, index: int) -> None:
        super().__init__()
        self.inner: nn.Module
        object.__setattr__(self, "inner", inner)  # not a registered child: names keep no "inner." prefix
        self._modules = inner._modules
        self.index = index
        from verification.cam.chunking import batch_limits, set_batch_limits

        lo, hi = batch_limits(inner)
        if (lo, hi) != (1, None):  # a torch.export program's fixed batch holds for its views too
            set_batch_limits(self, lo, hi)

    def forward(self, x: Tensor) -> Tensor:
        out = output_tensor(self.inner(x))
        if out.ndim != 2:
            raise ShapeError(f"a multi-label model must return (N, labels) logits; got {tuple(out.shape)}")
        z = out[:, self.index]
        return torch.stack([z, torch.zeros_like(z)], dim=1)

    def train(self, mode: bool = True) -> _LabelHead:
        self.inner.train(mode)
        self.training = mode
        return self


def not_label(name: str) -> str:
    """The name of the negative class of label ``name``'s binary task."""
    return f"not {name}"


def label_view(model: LoadedModel, index: int) -> LoadedModel:
    """Label ``index``'s binary task as a single-label LoadedModel: classes (label, "not label"), logits
    ``(z, 0)`` (softmax = (σ(z), 1 − σ(z))), no garbage class; shares the model's weights (nothing copied)."""
    if model.task != "multilabel":
        raise InvalidInputError(f"label views are for multi-label models; this one's task is {model.task!r}")
    if not 0 <= index < model.num_classes:
        raise ShapeError(f"label index {index} out of range for a model with {model.num_classes} labels")
    name = model.class_names[index]
    return replace(
        model,
        module=_LabelHead(model.module, index),
        class_names=(name, not_label(name)),
        task="classification",
        garbage_class=None,
        content_hash=f"{model.content_hash}:label:{index}",
        name=f"{model.name} [{name}]",
    )


# ------------------------------------------------------------------------------------------- references


def build_label_reference(
    model: LoadedModel,
    x: Tensor,
    labels: Sequence[Any],
    *,
    method: str = "gradcam",
    layer: str | None = None,
    grid: tuple[int, int] | None = None,
    batch_size: int = 16,
    **kwargs: Any,
) -> Any:
    """A reference bundle for a multi-label model from trusted, labelled model inputs ``x`` (N, C, H, W):
    label L's reference map is the mean normalised map *of L* over the images annotated with L that the model
    detects (σ_L ≥ 0.5) — the multi-label form of "the correctly classified images of the class". ``labels``:
    per image its label set (see :func:`parse_label_set`); further keywords go to
    :func:`verification.reference.reference_from_maps` (metrics, threshold, params)."""
    from verification.errors import BundleError
    from verification.metrics import DEFAULT_SIZE
    from verification.reference import reference_from_model_maps

    grid = grid or DEFAULT_SIZE
    classes = tuple(model.class_names)
    sets = [parse_label_set(v, classes) for v in labels]
    if len(sets) != len(x):
        raise ShapeError(f"{len(x)} images but {len(sets)} label sets")
    maps, ks, used = [], [], layer
    for s in range(0, len(x), batch_size):
        want = [(i, tuple(sets[i] or ())) for i in range(s, min(s + batch_size, len(x))) if sets[i]]
        if not want:
            continue
        idx = torch.tensor([i for i, _ in want], dtype=torch.long)
        lm = label_cams(model, x[idx], [list(w) for _, w in want], methods=(method,), layers=layer)
        res = lm.results[0]
        used = res.layer
        for r, (i, k) in enumerate(zip(lm.images, lm.labels)):
            if lm.probs[i, k] >= 0.5:
                maps.append(res.maps[r])
                ks.append(k)
    if len(ks) < 2:
        raise BundleError(
            f"only {len(ks)} (image, label) pairs are usable (annotated and detected at σ ≥ 0.5); a "
            "reference set needs at least two"
        )
    return reference_from_model_maps(
        model, np.stack(maps), np.asarray(ks), method=method, layer=used, grid=grid, **kwargs
    )
