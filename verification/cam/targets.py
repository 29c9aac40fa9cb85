"""Target scores: callables on a model's output that return one differentiable score per sample.

Every target returns a :class:`TargetScores` with the per-sample scores ``(N,)`` (the backward pass sums
them; samples do not interact in eval mode, so each sample's gradient is that of its own score), the
class scored for each sample and which samples have an empty target (segmentation, no pixel above the
threshold).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, SupportsIndex, TypeAlias, cast, runtime_checkable

import torch
from torch import Tensor

from verification.errors import InvalidInputError, ShapeError


@dataclass(frozen=True)
class TargetScores:
    """``scores`` (N,) differentiable; ``classes`` one index per sample (-1: not a class); ``empty`` (N,)."""

    scores: Tensor
    classes: tuple[int, ...]
    empty: Tensor


@runtime_checkable
class Target(Protocol):
    """A target: ``kind`` names the score; calling it on the model output gives :class:`TargetScores`."""

    kind: str

    def __call__(self, output: Tensor) -> TargetScores: ...

    def probabilities(self, output: Tensor) -> Tensor: ...


def output_tensor(output: Any) -> Tensor:
    """The prediction tensor of a model output: a tensor, ``{"out": ...}`` (torchvision segmentation), a
    mapping with one tensor, or a tuple/list whose first element is a tensor."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if "out" in output and isinstance(output["out"], Tensor):
            return output["out"]
        tensors = [v for v in output.values() if isinstance(v, Tensor)]
        if len(tensors) == 1:
            return tensors[0]
        raise ShapeError(
            f"the model returned a mapping with keys {sorted(map(str, output))}; expected an 'out' tensor"
        )
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ShapeError(f"the model returned {type(output).__name__}; expected a tensor of logits")


def _classes_per_sample(classes: int | Sequence[int] | Tensor | None, fallback: Tensor, n: int) -> Tensor:
    """(N,) long tensor of class indices; ``fallback`` (N,) used when ``classes`` is None."""
    if classes is None:
        return fallback
    if isinstance(classes, int):
        return torch.full((n,), classes, dtype=torch.long, device=fallback.device)
    if isinstance(classes, Tensor):
        if classes.is_floating_point() or classes.is_complex():
            raise InvalidInputError(f"target classes must be whole numbers, got dtype {classes.dtype}")
        idx = classes.to(torch.long)
    else:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
            raise InvalidInputError(f"target classes must be whole numbers, got {type(classes).__name__}")
        if len(classes) != n:
            raise ShapeError(
                f"got {len(classes)} per-sample targets for a batch of {n}; give one class per sample"
            )
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
            raise InvalidInputError("target classes must be whole numbers (one class index per sample)")
        idx = torch.as_tensor(list(classes), dtype=torch.long)
    if idx.ndim != 1 or idx.shape[0] != n:
        raise ShapeError(
            f"got {idx.numel()} per-sample targets for a batch of {n}; give one class per sample"
        )
    return idx.to(fallback.device)


def _check_range(idx: Tensor, k: int) -> None:
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= k):
        raise ShapeError(f"target class {idx.tolist()} out of range for a model with {k} outputs")


def _logits_2d(output: Tensor, kind: str) -> Tensor:
    if output.ndim != 2:
        raise ShapeError(
            f"the {kind} target needs (N, K) logits; the model returned {tuple(output.shape)}"
            + (" (use SegmentationTarget for (N, C, H, W) masks)" if output.ndim == 4 else "")
        )
    return output


class ClassLogit:
    """Raw logit of a class; ``classes=None`` → each sample's own predicted class (argmax per sample).

    The subclasses score the class through another function of the (N, K) logits (:meth:`score`)."""

    kind = "logit"

    def __init__(self, classes: int | Sequence[int] | None = None) -> None:
        self.classes = classes

    def score(self, logits: Tensor, idx: Tensor) -> Tensor:
        """(N,) differentiable score of class ``idx[n]`` of each sample from (N, K) logits: the logit."""
        return logits.gather(1, idx[:, None])[:, 0]

    def __call__(self, output: Tensor) -> TargetScores:
        logits = _logits_2d(output, self.kind)
        idx = _classes_per_sample(self.classes, logits.detach().argmax(dim=1), logits.shape[0])
        _check_range(idx, logits.shape[1])
        scores = self.score(logits, idx)
        empty = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        return TargetScores(scores, tuple(int(i) for i in idx.tolist()), empty)

    def probabilities(self, output: Tensor) -> Tensor:
        return torch.softmax(output.detach().float(), dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.classes!r})"


class ClassProbability(ClassLogit):
    """Softmax probability of a class (default: each sample's predicted class)."""

    kind = "probability"

    def score(self, logits: Tensor, idx: Tensor) -> Tensor:
        return torch.softmax(logits, dim=1).gather(1, idx[:, None])[:, 0]


class MultiLabel(ClassLogit):
    """Sigmoid of one output of a multi-label model (default: each sample's highest-scoring label)."""

    kind = "multilabel"

    def score(self, logits: Tensor, idx: Tensor) -> Tensor:
        return torch.sigmoid(logits.gather(1, idx[:, None])[:, 0])

    def probabilities(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output.detach().float())


class LabelLogit(ClassLogit):
    """Raw logit of one label of a multi-label model (the score pytorch-grad-cam's ``ClassifierOutputTarget``
    takes), with per-label sigmoid probabilities; ``classes=None`` → each sample's top label.

    The map explains the label's logit, not its sigmoid: σ'(z) only rescales each sample's gradient (see
    :class:`MultiLabel`), but it underflows for a saturated label (z ≳ 17 in float32 leaves a map of rounding
    noise), and a confident finding is the one a clinician most wants explained."""

    kind = "label_logit"

    def probabilities(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output.detach().float())


def task_probabilities(task: str | None, logits: Tensor) -> Tensor:
    """Class probabilities of (N, K) logits for a model's ``task``: a sigmoid per label for "multilabel"
    (they need not add up to 1), the softmax over the classes otherwise."""
    out = logits.detach().float()
    return torch.sigmoid(out) if task == "multilabel" else torch.softmax(out, dim=1)


def task_target(model: object, spec: TargetSpec) -> TargetSpec:
    """``spec`` read for ``model``'s task: on a multi-label model (a LoadedModel whose task is "multilabel")
    None, a label index or one index per sample become a :class:`LabelLogit` (sigmoid probabilities, each
    sample's top label by default); anything else, and every other model, is returned unchanged."""
    if getattr(model, "task", None) != "multilabel":
        return spec
    if spec is None or (isinstance(spec, int) and not isinstance(spec, bool)):
        return LabelLogit(spec)
    if isinstance(spec, Tensor) and not spec.is_floating_point():
        return LabelLogit(spec.tolist())
    if (
        isinstance(spec, Sequence)
        and not isinstance(spec, (str, bytes))
        and all(isinstance(i, int) and not isinstance(i, bool) for i in spec)
    ):
        return LabelLogit(list(spec))
    return spec


def default_labels(probs: Tensor | Any, threshold: float = 0.5) -> tuple[tuple[int, ...], ...]:
    """The labels a multi-label map explains by default, per sample: every label with probability ≥
    ``threshold`` (in descending probability), or the top label when none reaches it."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ShapeError(f"expected (N, K) label probabilities, got {tuple(p.shape)}")
    out = []
    for row in p:
        order = torch.argsort(-row, stable=True).tolist()
        positive = [int(k) for k in order if float(row[k]) >= threshold]
        out.append(tuple(positive) if positive else (int(order[0]),))
    return tuple(out)


class SegmentationTarget:
    """Segmentation Grad-CAM: ``y = Σ_{p∈M} logit_c(p)``, M the pixels whose class-c probability ≥ threshold.

    Probabilities are the softmax over channels, or the sigmoid for a one-channel output. ``classes=None``
    picks, per sample, the non-background class (channel ≥ 1) predicted on most pixels (channel 0 for a
    one-channel model). A sample with an empty M has score 0 and is flagged ``empty``.
    """

    kind = "segmentation"

    def __init__(self, classes: int | Sequence[int] | None = None, threshold: float = 0.5) -> None:
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0.0 <= threshold <= 1.0
        ):
            raise InvalidInputError(
                f"the segmentation threshold must be a number in [0, 1], got {threshold!r:.40}"
            )
        self.classes = classes
        self.threshold = threshold

    def _probs(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    def __call__(self, output: Tensor) -> TargetScores:
        n = output.shape[0]
        idx, mask = self._region(output)
        sel = idx[:, None, None, None].expand(n, 1, *output.shape[2:])
        scores = (output.gather(1, sel)[:, 0] * mask).sum(dim=(1, 2))
        empty = ~mask.flatten(1).any(dim=1)
        return TargetScores(scores, tuple(int(i) for i in idx.tolist()), empty)

    def region(self, output: Tensor) -> Tensor:
        """M for each sample: (N, H, W) bool, the pixels whose target-class probability ≥ ``threshold``."""
        return self._region(output)[1]

    def _region(self, output: Tensor) -> tuple[Tensor, Tensor]:
        if output.ndim != 4:
            raise ShapeError(f"the segmentation target needs (N, C, H, W) logits; got {tuple(output.shape)}")
        n, c = output.shape[:2]
        probs = self._probs(output.detach())
        if c == 1:
            fallback = torch.zeros(n, dtype=torch.long, device=output.device)
        else:
            counts = torch.nn.functional.one_hot(probs.argmax(1), c).sum(dim=(1, 2))  # (N, C)
            fallback = counts[:, 1:].argmax(1) + 1
        idx = _classes_per_sample(self.classes, fallback, n)
        _check_range(idx, c)
        sel = idx[:, None, None, None].expand(n, 1, *output.shape[2:])
        return idx, probs.gather(1, sel)[:, 0] >= self.threshold

    def probabilities(self, output: Tensor) -> Tensor:
        return self._probs(output.detach().float()).mean(dim=(2, 3))

    def __repr__(self) -> str:
        return f"SegmentationTarget({self.classes!r}, threshold={self.threshold})"


class CustomTarget:
    """Wraps a plain callable ``f(output) -> (N,)`` or scalar tensor as a target (classes reported as -1)."""

    kind = "custom"

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, output: Tensor) -> TargetScores:
        scores = self.fn(output)
        if not isinstance(scores, Tensor):
            raise ShapeError(f"a custom target must return a tensor, got {type(scores).__name__}")
        n = output.shape[0]
        if scores.ndim == 0:
            scores = scores.reshape(1).expand(n) / n
        if scores.shape != (n,):
            raise ShapeError(f"a custom target must return (N,) scores; got {tuple(scores.shape)} for N={n}")
        return TargetScores(scores, (-1,) * n, torch.zeros(n, dtype=torch.bool, device=output.device))

    def probabilities(self, output: Tensor) -> Tensor:
        out = output.detach().float()
        if out.ndim == 4:
            return (
                torch.softmax(out, 1).mean(dim=(2, 3))
                if out.shape[1] > 1
                else torch.sigmoid(out).mean((2, 3))
            )
        return torch.softmax(out, dim=1)

    def __repr__(self) -> str:
        return f"CustomTarget({getattr(self.fn, '__name__', type(self.fn).__name__)})"


TargetSpec: TypeAlias = (
    Target | int | SupportsIndex | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | None
)
"""What a caller may pass as ``target`` (:func:`as_target`): a Target, a class index (numpy integers too), one
per sample, an integer tensor of them, a callable ``f(output) -> (N,)`` scores, or None (the default)."""


def as_target(spec: TargetSpec, output: Tensor | None = None) -> Target:
    """Turn what a caller passes as ``target`` into a Target.

    None → predicted class logit (or, for (N, C, H, W) outputs, the segmentation target); an int or one int
    per sample → that class's logit (segmentation target for mask outputs); a Target is returned as is;
    any other callable is wrapped as a :class:`CustomTarget`.
    """
    if isinstance(spec, type):
        raise InvalidInputError(
            f"target must be a Target object, not the class {spec.__name__[:40]}; e.g. SegmentationTarget(1)"
        )
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, (bool, str, bytes)):
        raise InvalidInputError(
            f"target must be None, a class index, one class index per sample, or a Target; got {spec!r:.40}"
            + (
                " (look a class name up in the model's class_names to get its index)"
                if isinstance(spec, str)
                else ""
            )
        )
    if not isinstance(spec, (int, Tensor)) and hasattr(spec, "__index__") and not callable(spec):
        spec = operator.index(cast(Any, spec))  # numpy integers
    seg = output is not None and output.ndim == 4
    if spec is None or isinstance(spec, (int, Tensor)):
        classes = spec.tolist() if isinstance(spec, Tensor) else spec
        return SegmentationTarget(classes) if seg else ClassLogit(classes)
    if isinstance(spec, Sequence) and not isinstance(spec, str) and all(isinstance(i, int) for i in spec):
        return SegmentationTarget(spec) if seg else ClassLogit(spec)
    if callable(spec):
        return CustomTarget(spec)
    raise InvalidInputError(
        "target must be None, a class index, one class index per sample, or a Target; "
        f"got {type(spec).__name__}"
    )
