"""The garbage class as a tool (METHODS.md §3): one extra output trained on out-of-distribution images.

:func:`add_garbage_class` copies a trained classifier, widens its final ``nn.Linear`` by one row (the old rows
are copied, so the old classes' logits are unchanged before fine-tuning) and fine-tunes on in-distribution
plus OOD images (the head, or the head and the last block). A prediction of that class *rejects* the input:
:func:`predict` reports it as ``rejected=True`` with the message "input rejected as out-of-distribution",
never as a diagnosis. :func:`evaluate_rejection` measures OOD rejection and in-distribution false rejection.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from verification.cam.targets import task_probabilities
from verification.errors import LayerError, ShapeError, VerificationError
from verification.io.images import ImageInput
from verification.io.records import LoadedModel

log = logging.getLogger(__name__)

TrainScope = Literal["head", "head+last_block"]
REJECTED_MESSAGE = "input rejected as out-of-distribution"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")

ImagesOrFolder = Tensor | str | Path | Sequence[ImageInput]
"""A model input tensor, a folder of image files, or images (as :data:`verification.io.images.ImagesLike`)."""


# ----------------------------------------------------------------------------------------------------------
# Finding and widening the head
# ----------------------------------------------------------------------------------------------------------


def find_classifier_head(module: nn.Module, num_classes: int) -> str:
    """Dotted name of the classifier's final layer: the last ``nn.Linear`` with ``out_features ==
    num_classes`` in ``named_modules()`` order (resnet ``fc``, mobilenet ``classifier.3``, densenet
    ``classifier``, timm ``head.fc``, ...)."""
    found = [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if not found:
        raise LayerError(
            f"no nn.Linear with {num_classes} outputs found; the garbage class needs a classifier whose last "
            "layer is a Linear layer (1×1-convolution heads are not supported)"
        )
    return found[-1]


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def widen_linear(old: nn.Linear) -> nn.Linear:
    """A Linear with one more output: rows 0..K-1 are copies of ``old``; the new row starts at zero weight and
    a bias one below the smallest old bias, so the untrained extra output rarely wins."""
    new = nn.Linear(old.in_features, old.out_features + 1, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.out_features].copy_(old.weight)
        new.weight[old.out_features].zero_()
        if old.bias is not None and new.bias is not None:
            new.bias[: old.out_features].copy_(old.bias)
            new.bias[old.out_features] = old.bias.min() - 1.0
    return new


def last_block(module: nn.Module, head: str) -> str:
    """Name of the last convolutional block before the head: walking the parameters backwards from the head,
    the first two-level module prefix (``layer4.1``, ``features.12``, ``features.denseblock4``) whose module
    contains a convolution."""
    prefixes: list[str] = []
    for name, _ in module.named_parameters():
        if name.startswith(head + "."):
            continue
        parts = name.split(".")[:-1]
        prefix = ".".join(parts[:2]) if len(parts) >= 2 else ".".join(parts)
        if prefix and (not prefixes or prefixes[-1] != prefix):
            prefixes.append(prefix)
    for prefix in reversed(prefixes):
        sub = module.get_submodule(prefix)
        if any(isinstance(m, nn.Conv2d) for m in sub.modules()):
            return prefix
    raise LayerError("could not find a convolutional block before the classifier head")


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def _as_tensor(images: ImagesOrFolder, model: LoadedModel, what: str) -> Tensor:
    """:func:`verification.io.images.as_input`, and a folder's images (sorted, recursive) for a folder."""
    from verification.io.images import as_input

    if isinstance(images, str | Path):
        folder = Path(images)
        if not folder.is_dir():
            raise VerificationError(f"{what}: '{folder}' is not a folder of images")
        items = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not items:
            raise VerificationError(f"{what}: no images ({', '.join(IMAGE_SUFFIXES)}) in '{folder}'")
        return as_input(items, model, what=what)
    return as_input(images, model, what=what)


def _state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Adding and training the garbage class
# ----------------------------------------------------------------------------------------------------------


def add_garbage_class(
    loaded_model: LoadedModel,
    ood_images: ImagesOrFolder,
    in_dist_images: ImagesOrFolder,
    in_dist_labels: Sequence[int] | np.ndarray | Tensor,
    *,
    train: TrainScope = "head",
    epochs: int = 10,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 32,
    garbage_name: str = "garbage",
    head: str | None = None,
    block: str | None = None,
) -> LoadedModel:
    """A copy of ``loaded_model`` with one extra output ``garbage_name`` trained to reject ``ood_images``.

    Images: a preprocessed tensor (N, C, H, W), a folder, or images / paths (preprocessed with the model's
    own settings). ``train``: "head" (only the widened final Linear) or "head+last_block" (also every
    parameter from the last convolutional block — :func:`last_block`, or ``block`` — up to the head, e.g. a
    hidden Linear layer in between). Fine-tuning: Adam(``lr``), cross-entropy with class weights inverse to
    class frequency (OOD sets are usually smaller or larger than the rest), ``epochs`` passes in batches of
    ``batch_size`` shuffled with ``seed``; normalisation layers stay in eval mode (running statistics frozen).
    The caller's model is never modified.
    """
    if loaded_model.task != "classification":
        raise VerificationError(f"the garbage class needs a classification model, not '{loaded_model.task}'")
    if loaded_model.garbage_class is not None:
        raise VerificationError(f"the model already has a garbage class '{loaded_model.garbage_class}'")
    if garbage_name in loaded_model.class_names:
        raise VerificationError(f"'{garbage_name}' is already one of the class names")
    if train not in ("head", "head+last_block"):
        raise ValueError(f"train must be 'head' or 'head+last_block', got '{train}'")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    x_in = _as_tensor(in_dist_images, loaded_model, "in-distribution images")
    x_ood = _as_tensor(ood_images, loaded_model, "OOD images")
    y_in = torch.as_tensor(np.asarray(in_dist_labels), dtype=torch.long).reshape(-1)
    if y_in.shape[0] != x_in.shape[0]:
        raise ShapeError(f"{x_in.shape[0]} in-distribution images but {y_in.shape[0]} labels")
    k = loaded_model.num_classes
    if y_in.numel() and (int(y_in.min()) < 0 or int(y_in.max()) >= k):
        raise ShapeError(f"in-distribution labels must lie in 0..{k - 1}")

    module = copy.deepcopy(loaded_model.module)
    head_name = head or find_classifier_head(module, k)
    old = module.get_submodule(head_name)
    if not isinstance(old, nn.Linear):
        raise LayerError(f"'{head_name}' is not an nn.Linear layer")
    _set_submodule(module, head_name, widen_linear(old))

    for p in module.parameters():
        p.requires_grad_(False)
    params = [p for p in module.get_submodule(head_name).parameters()]
    if train == "head+last_block":
        start = block or last_block(module, head_name)
        names = [n for n, _ in module.named_parameters()]
        first = next((i for i, n in enumerate(names) if n.startswith(start + ".")), None)
        if first is None:
            raise LayerError(f"'{start}' has no parameters in this model")
        ids = {id(p) for p in params}
        params += [p for _, p in list(module.named_parameters())[first:] if id(p) not in ids]
    for p in params:
        p.requires_grad_(True)

    x = torch.cat([x_in, x_ood])
    y = torch.cat([y_in, torch.full((x_ood.shape[0],), k, dtype=torch.long)])
    counts = torch.bincount(y, minlength=k + 1).float()
    weight = torch.where(counts > 0, counts.sum() / ((k + 1) * counts.clamp(min=1)), torch.zeros_like(counts))
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    module.eval()  # dropout off, BatchNorm running statistics frozen: only the chosen weights move
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for s in range(0, x.shape[0], batch_size):
            idx = order[s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module(x[idx]), y[idx])
            loss.backward()  # gradients of our own deep copy; the caller's parameters are untouched
            opt.step()
            total += float(loss.detach()) * idx.numel()
        log.info("garbage fine-tune epoch %d/%d: loss %.4f", epoch + 1, epochs, total / x.shape[0])
    for p in module.parameters():
        p.requires_grad_(True)
        p.grad = None
    module.eval()
    return replace(
        loaded_model,
        module=module,
        class_names=(*loaded_model.class_names, garbage_name),
        garbage_class=garbage_name,
        source_format="module",
        content_hash=_state_hash(module),
        name=f"{loaded_model.name}+{garbage_name}",
    )


def save(model: LoadedModel, path: str | Path, *, half: bool = False) -> Path:
    """Write the model with its class names and garbage class via :func:`verification.io.models.save_model`
    (``<path>.safetensors`` + sidecar JSON)."""
    from verification.io.models import save_model

    if model.architecture is None:
        raise VerificationError(
            "this model has no architecture name, so its weights cannot be saved as safetensors + sidecar; "
            "load it from a safetensors/state-dict file with an architecture first"
        )
    return save_model(
        model.module,
        path,
        architecture=model.architecture,
        arch_kwargs=model.arch_kwargs,
        class_names=model.class_names,
        in_channels=model.in_channels,
        input_size=model.input_size,
        mean=model.mean,
        std=model.std,
        task=model.task,
        garbage_class=model.garbage_class,
        half=half,
    )


# ----------------------------------------------------------------------------------------------------------
# Predictions and rejection rates
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One prediction as shown to a user. When the garbage class wins, ``rejected`` is True, ``class_index``
    and ``class_name`` are None and ``message`` says the input was rejected — it is never a diagnosis."""

    index: int
    class_index: int | None
    class_name: str | None
    confidence: float
    rejected: bool
    message: str
    garbage_probability: float | None
    probs: tuple[float, ...]


def _probs(model: LoadedModel, x: Tensor, batch_size: int) -> np.ndarray:
    from verification.cam.chunking import run_chunked

    module = model.module
    parts = []
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            for s in range(0, x.shape[0], batch_size):
                out = run_chunked(model, x[s : s + batch_size], module)  # batch sizes the model accepts
                if out.ndim != 2:
                    raise ShapeError(f"expected (N, K) logits from a classifier; got {tuple(out.shape)}")
                parts.append(task_probabilities(model.task, out).cpu().numpy())
    finally:
        module.train(was_training)
    return np.concatenate(parts, axis=0)


def predict(model: LoadedModel, x: ImagesOrFolder, *, batch_size: int = 32) -> list[Prediction]:
    """Predictions for a batch (tensor (N, C, H, W), folder or images); a garbage-class argmax is reported
    as a rejected input."""
    probs = _probs(model, _as_tensor(x, model, "images"), batch_size)
    g = model.garbage_index
    out = []
    for i, p in enumerate(probs):
        c = int(p.argmax())
        conf = float(p[c])
        rejected = g is not None and c == g
        out.append(
            Prediction(
                index=i,
                class_index=None if rejected else c,
                class_name=None if rejected else model.class_names[c],
                confidence=conf,
                rejected=rejected,
                message=REJECTED_MESSAGE if rejected else f"{model.class_names[c]} ({conf:.1%})",
                garbage_probability=None if g is None else float(p[g]),
                probs=tuple(float(v) for v in p),
            )
        )
    return out


@dataclass(frozen=True)
class RejectionReport:
    """Share of OOD inputs rejected (higher is better) and of in-distribution inputs falsely rejected (lower
    is better), with the counts behind them."""

    ood_rejection_rate: float
    false_rejection_rate: float
    counts: dict[str, int]

    def summary(self) -> str:
        c = self.counts
        return (
            f"OOD rejected {c['ood_rejected']}/{c['ood_total']} ({self.ood_rejection_rate:.1%}); "
            f"in-distribution falsely rejected {c['in_dist_rejected']}/{c['in_dist_total']} "
            f"({self.false_rejection_rate:.1%})"
        )


def evaluate_rejection(
    model: LoadedModel, ood: ImagesOrFolder, in_dist: ImagesOrFolder, *, batch_size: int = 32
) -> RejectionReport:
    """OOD rejection rate and in-distribution false-rejection rate of a model with a garbage class."""
    if model.garbage_index is None:
        raise VerificationError("this model has no garbage class; add one with add_garbage_class first")
    ood_preds = predict(model, ood, batch_size=batch_size)
    in_preds = predict(model, in_dist, batch_size=batch_size)
    ood_total = len(ood_preds)
    ood_rej = sum(p.rejected for p in ood_preds)
    in_rej = sum(p.rejected for p in in_preds)
    return RejectionReport(
        ood_rejection_rate=ood_rej / ood_total if ood_total else float("nan"),
        false_rejection_rate=in_rej / len(in_preds) if in_preds else float("nan"),
        counts={
            "ood_total": int(ood_total),
            "ood_rejected": int(ood_rej),
            "in_dist_total": len(in_preds),
            "in_dist_rejected": int(in_rej),
        },
    )


__all__ = [
    "REJECTED_MESSAGE",
    "Prediction",
    "RejectionReport",
    "add_garbage_class",
    "evaluate_rejection",
    "find_classifier_head",
    "last_block",
    "predict",
    "save",
    "widen_linear",
]
