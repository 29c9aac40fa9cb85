"""What the methods that run the model again share: Score-CAM and Ablation-CAM (kind "perturbation") and the
captum attributions (kind "attribution").

The input check, the model's forward with a typed error, per-row scoring of chunks that mix samples, the
chunk-size bound for caller-fixed chunks, and the :class:`~verification.cam.records.CamResult` built from a
raw map and the capture pass.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from verification.cam.capture import Capture
from verification.cam.layers import model_device_dtype, resolve_layer_names
from verification.cam.methods import postprocess
from verification.cam.modules import ModelLike, as_module
from verification.cam.records import CamResult, base_provenance
from verification.cam.targets import Target, output_tensor
from verification.errors import InputTooLargeError, InvalidInputError, ModelForwardError, ShapeError

__all__ = [
    "MAX_CHUNK_INPUT_BYTES",
    "check_chunk",
    "check_float_batch",
    "forward_output",
    "make_result",
    "prepare",
    "row_scorer",
    "run_forward",
]

# A caller-fixed chunk holds chunk_size masked copies of one input row (and the model's activations for
# them); bound the masked inputs so that a huge chunk_size is refused instead of allocated.
MAX_CHUNK_INPUT_BYTES = 512 << 20


def check_float_batch(x: Tensor) -> None:
    """A floating-point (N, C, H, W) tensor with at least one sample; ShapeError otherwise."""
    if not isinstance(x, Tensor):
        raise ShapeError(f"The input must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}.")
    if x.ndim != 4:
        raise ShapeError(f"The input must have shape (N, C, H, W); got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise ShapeError(f"The input must be a floating-point tensor; got dtype {x.dtype}.")
    if x.shape[0] == 0:
        raise ShapeError("The input batch is empty.")


def run_forward(forward: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``forward(x)``; any failure but a ModelForwardError becomes one, naming the input's shape."""
    try:
        return forward(x)
    except ModelForwardError:
        raise
    except Exception as err:
        raise ModelForwardError(f"The model failed on an input of shape {tuple(x.shape)}: {err}") from err


def forward_output(module: nn.Module, x: Tensor) -> Tensor:
    """The prediction tensor of ``module(x)`` (:func:`~verification.cam.targets.output_tensor`), failures as
    ModelForwardError."""
    return output_tensor(run_forward(module, x))


def row_scorer(
    target: Target, classes: tuple[int, ...], probability: bool
) -> tuple[Callable[[Tensor, Tensor], Tensor], bool]:
    """Score rows of a chunk that may mix samples: ``scorer(output, sample_index) -> (rows,)`` float64, and
    whether those scores are class probabilities.

    Each row is scored against its own sample's class (a copy of the target with that class per row).
    ``probability`` scores the class probability (``target.probabilities``, computed in float64 so that
    saturated probabilities keep their logarithm) instead of the target's own score. Targets without classes
    (custom callables, class -1) score every row with the target as given.
    """
    cls = torch.tensor(classes, dtype=torch.long)
    per_class = all(c >= 0 for c in classes) and hasattr(target, "classes")

    def scorer(out: Tensor, ii: Tensor) -> Tensor:
        rows = cls[ii.cpu()]
        if probability and per_class:
            probs = target.probabilities(out.double())
            return probs[torch.arange(out.shape[0], device=probs.device), rows.to(probs.device)].double()
        if per_class:
            t = copy.copy(target)
            t.classes = rows.tolist()  # type: ignore[attr-defined]
            return t(out).scores.double()
        return target(out).scores.double()

    return scorer, probability and per_class


def make_result(
    *,
    method: str,
    layer: str,
    cap: Capture,
    raw: Tensor,
    normalize: bool,
    provenance: dict[str, str],
) -> CamResult:
    """The result of a method that computed its raw map (N, h, w) itself, with the capture pass's output,
    target and scores: maps post-processed as every method's, an empty segmentation target an all-zero map
    (flagged constant and named in the provenance)."""
    maps, constant = postprocess(raw, cap.input_size, normalize)
    empty = cap.scores.empty.to(maps.device)
    if bool(empty.any()):
        # a segmentation target with no pixel above the threshold: an all-zero map, flagged
        maps = torch.where(empty[:, None, None], torch.zeros_like(maps), maps)
        raw = torch.where(empty[:, None, None], torch.zeros_like(raw), raw)
        constant = constant | empty
        provenance["empty_target"] = ",".join(str(i) for i in torch.nonzero(empty).flatten().tolist())
    out = cap.output
    logits = out.mean(dim=(2, 3)) if out.ndim == 4 else out.reshape(out.shape[0], -1)
    prov = base_provenance()
    prov.update({"method": method, "layer": layer, "target": repr(cap.target)})
    prov.update(provenance)
    return CamResult(
        method=method,
        layer=layer,
        raw=raw.detach().float().cpu().numpy(),
        maps=maps.detach().float().cpu().numpy(),
        targets=cap.scores.classes,
        target_kind=cap.target.kind,
        logits=logits.detach().float().cpu().numpy(),
        probs=cap.target.probabilities(out).reshape(out.shape[0], -1).float().cpu().numpy(),
        constant=constant.cpu().numpy().astype(bool),
        provenance=prov,
    )


def check_chunk(chunk_size: int, x: Tensor | None = None) -> None:
    """A positive whole ``chunk_size`` whose masked copies of one row of ``x`` fit
    :data:`MAX_CHUNK_INPUT_BYTES`; InvalidInputError / InputTooLargeError otherwise."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r:.40}.")
    if isinstance(x, Tensor) and x.ndim == 4:
        row = max(1, math.prod(x.shape[1:])) * x.element_size()
        if chunk_size * row > MAX_CHUNK_INPUT_BYTES:
            raise InputTooLargeError(
                f"chunk_size {chunk_size} would hold {chunk_size * row / 2**20:,.0f} MiB of masked inputs "
                f"of shape {tuple(x.shape[1:])}; use at most {max(1, MAX_CHUNK_INPUT_BYTES // row)} rows, "
                "or None to tune it."
            )


def prepare(model: ModelLike, x: Tensor, layer: str) -> tuple[nn.Module, Tensor]:
    """The checked module and ``x`` detached on its device and dtype, for a method run at ``layer``."""
    check_float_batch(x)
    if not isinstance(layer, str):
        raise InvalidInputError(f"layer must be a layer name, got {type(layer).__name__}.")
    module = as_module(model)
    resolve_layer_names(module, [layer])
    device, dtype = model_device_dtype(module)
    return module, x.detach().to(device=device, dtype=dtype)
