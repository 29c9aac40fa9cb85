"""One forward and one backward: activations and gradients at any number of layers.

Hooks live exactly as long as :func:`capture` (registered on entry, removed in ``finally``, also when the
forward raises); every module's train/eval flag is restored; gradients come from a single
``torch.autograd.grad`` call on the captured activations, so no parameter's ``.grad`` is touched; the caller's
input is never modified (the model runs on a detached copy) and needs no ``requires_grad``.

Details that matter for correctness:

- The hook hands the rest of the network a *clone* of the captured activation. A later in-place op (resnet's
  ``out += identity`` after ``bn2``, an in-place ReLU) then edits the clone, not the tensor we took the
  gradient of — otherwise the "activation" would silently become a later layer's value.
- Where the captured output does not require grad (a frozen model, no-grad input), it is replaced by a
  detached leaf that requires grad, so the gradient still reaches it; later captured layers hang off it.
- A module called several times in one forward (a shared ReLU) is captured at its last call.
- Runs under ``torch.enable_grad()`` and outside inference mode whatever the caller's grad mode.
- Non-finite numbers are reported, never explained: NaN or ±inf in the input, the model's output, the
  captured activations or their gradients raise :class:`~verification.errors.NonFiniteError` naming the
  samples (a sidecar's NaN mean/std or weights scaled by 1e30 end here, not in a blank "constant" map).
- Safe for concurrent calls on one model (:mod:`verification.cam.concurrency`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from verification.cam.chunking import chunk_bounds, pad_rows
from verification.cam.concurrency import exclusive, this_thread_only
from verification.cam.layers import (
    eval_mode,
    first_tensor,
    is_spatial_map,
    model_device_dtype,
    replace_first_tensor,
    resolve_layer_names,
)
from verification.cam.modules import ModelLike, as_module
from verification.cam.targets import Target, TargetScores, TargetSpec, as_target, output_tensor
from verification.errors import InvalidInputError, LayerError, ModelForwardError, NonFiniteError, ShapeError


@dataclass(frozen=True)
class Capture:
    """``activations[name]`` / ``gradients[name]`` (N, C, h, w) detached float tensors, ``output`` the model's
    prediction tensor (detached), ``target`` the Target used and ``scores`` what it returned, ``calls[name]``
    how many times each layer ran."""

    activations: dict[str, Tensor]
    gradients: dict[str, Tensor]
    output: Tensor
    target: Target
    scores: TargetScores
    input_size: tuple[int, int]
    calls: dict[str, int]


def _samples(idx: list[int], n: int) -> str:
    shown = ", ".join(map(str, idx[:8])) + (", …" if len(idx) > 8 else "")
    return f"sample{'s' if len(idx) > 1 else ''} {shown} of {n}"


def check_finite(t: Tensor, what: str, advice: str) -> None:
    """Raise NonFiniteError when any sample (first dimension) of ``t`` holds NaN or ±inf."""
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return
    bad = ~torch.isfinite(t.detach().reshape(t.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        idx = torch.nonzero(bad).reshape(-1).tolist()
        raise NonFiniteError(f"{what} has NaN or infinite values for {_samples(idx, t.shape[0])}; {advice}")


ADVICE_INPUT = "check the image and the preprocessing (mean/std in the model's sidecar)"
ADVICE_MODEL = (
    "the model does not give finite numbers on this input: check its weights and the preprocessing "
    "(mean/std in the sidecar)"
)


def check_input(x: Any) -> None:
    """The checks every CAM entry point makes on its input batch (N, C, H, W): a real-valued tensor with at
    least one sample and one pixel, all finite."""
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ShapeError(
            f"expected an input tensor (N, C, H, W); got {getattr(x, 'shape', type(x).__name__)}"
        )
    if x.shape[0] == 0:
        raise ShapeError(f"the input batch is empty (shape {tuple(x.shape)}); give at least one image")
    if 0 in x.shape[1:]:
        raise ShapeError(f"the input has no pixels or channels (shape {tuple(x.shape)})")
    if x.is_complex() or x.dtype == torch.bool:
        raise InvalidInputError(f"the input must be real numbers, got dtype {x.dtype}")
    check_finite(x, "the input", ADVICE_INPUT)


@exclusive
def capture(
    model: ModelLike,
    x: Tensor,
    layers: Sequence[str],
    target: TargetSpec = None,
    *,
    gradients: bool = True,
    eval: bool = True,
) -> Capture:
    """Run ``model`` once on ``x`` (N, C, H, W) with forward hooks on ``layers`` and, when ``gradients``, take
    the gradient of ``Σ_n target(output)_n`` with respect to every captured activation in one call.

    ``eval`` (default True) runs the model in eval mode — batch-norm statistics and dropout of a deployed
    model, no update of running statistics — and restores every module's own flag afterwards.
    """
    check_input(x)
    module = as_module(model)
    names = resolve_layer_names(module, layers)
    by_name = dict(module.named_modules())
    device, dtype = model_device_dtype(module)

    acts: dict[str, list[Tensor]] = {n: [] for n in names}
    bad: dict[str, str] = {}
    handles = []

    def make_hook(name: str) -> Any:
        def hook(mod: nn.Module, args: Any, output: Any) -> Any:
            t = first_tensor(output)
            if t is None or not t.is_floating_point() or not is_spatial_map(t.shape, x.shape[2:]):
                bad[name] = repr(tuple(t.shape)) if t is not None else type(output).__name__
                return None
            if not t.requires_grad and torch.is_grad_enabled():
                t = t.detach().requires_grad_(True)
            acts[name].append(t)
            return replace_first_tensor(output, t.clone())

        return hook

    # one forward per chunk of rows the model accepts (one chunk unless a torch.export program fixes its
    # batch): per chunk and layer the last activation, each kept whole (padding rows included) so that the
    # gradient below reaches it; the padding rows are dropped from the output and the activations after.
    chunk_acts: dict[str, list[Tensor]] = {n: [] for n in names}
    chunk_rows: list[int] = []
    outs: list[Tensor] = []
    calls: dict[str, int] = {}
    with torch.inference_mode(False), torch.enable_grad():
        inp = x.detach().to(device=device, dtype=dtype).clone()
        try:
            for name in names:
                handles.append(by_name[name].register_forward_hook(this_thread_only(make_hook(name))))
            with eval_mode(module, eval):
                grad_ctx = torch.enable_grad() if gradients else torch.no_grad()
                with grad_ctx:
                    for start, stop in chunk_bounds(module, int(inp.shape[0])):
                        try:
                            raw_out = module(pad_rows(module, inp[start:stop]))
                        except LayerError:
                            raise
                        except Exception as exc:
                            raise ModelForwardError(
                                f"the model failed on an input of shape {tuple(x.shape)}: {exc}"
                            ) from exc
                        if bad:
                            break
                        missing = [n for n in names if not acts[n]]
                        if missing:
                            raise LayerError(
                                f"these layers did not run during the forward pass: {', '.join(missing)}"
                            )
                        for n in names:
                            chunk_acts[n].append(acts[n][-1])
                            calls[n] = len(acts[n])
                            acts[n].clear()
                        chunk_rows.append(stop - start)
                        outs.append(output_tensor(raw_out)[: stop - start])
        finally:
            for h in handles:
                h.remove()
        if bad:
            from verification.cam.layers import scan_layers, spatial_candidates

            spatial = spatial_candidates(scan_layers(module, tuple(x.shape[1:])))
            raise LayerError(
                "these layers do not produce a spatial (N, C, h, w) map with more than one position "
                "(a channels-last (N, h, w, C) tensor does not count): "
                + ", ".join(f"{n} → {s}" for n, s in bad.items())
                + f"; spatial layers nearby: {', '.join(spatial[-8:])}"
            )
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        check_finite(out, "the model's output", ADVICE_MODEL)
        tgt = as_target(target, out)
        scores = tgt(out)
        if not isinstance(scores, TargetScores):
            raise InvalidInputError(
                f"the target {tgt!r:.60} returned {type(scores).__name__}, not TargetScores"
            )

        def joined(parts: Sequence[Tensor]) -> Tensor:
            kept = [p[:r] for p, r in zip(parts, chunk_rows)]
            return kept[0] if len(kept) == 1 else torch.cat(kept)

        last = {n: joined(chunk_acts[n]) for n in names}
        acts.clear()
        for n in names:
            check_finite(last[n], f"the activations of layer {n!r}", ADVICE_MODEL)
        if gradients:
            total = scores.scores.sum()
            inputs = [a for n in names for a in chunk_acts[n]]
            grads: Sequence[Tensor | None] = (None,) * len(inputs)
            if total.requires_grad:
                grads = torch.autograd.grad(total, inputs, allow_unused=True)
            per_layer = len(chunk_rows)
            gdict = {}
            for j, n in enumerate(names):
                parts = [
                    g.detach() if g is not None else torch.zeros_like(a)
                    for g, a in zip(grads[j * per_layer : (j + 1) * per_layer], chunk_acts[n])
                ]
                gdict[n] = joined(parts).float()
            for n in names:
                check_finite(gdict[n], f"the gradient at layer {n!r}", ADVICE_MODEL)
        else:
            gdict = {}
    adict = {n: last[n].detach().float() for n in names}
    detached = TargetScores(scores.scores.detach(), scores.classes, scores.empty.detach())
    return Capture(
        activations=adict,
        gradients=gdict,
        output=out.detach(),
        target=tgt,
        scores=detached,
        input_size=(int(x.shape[2]), int(x.shape[3])),
        calls=calls,
    )
