"""Many forwards of one model without gradients: a faster inference copy and self-tuned chunk sizes.

The perturbation methods (Score-CAM, and anything else that scores thousands of perturbed inputs) spend
nearly all their time in plain forwards of the same model. Two things make each forward cheaper without
changing what it computes:

* :func:`inference_forward` runs the forwards on a private copy of the model with every convolution's
  BatchNorm folded into its weights (``torch.fx`` conv-bn fusion) and 4-D weights in ``channels_last``
  layout (oneDNN's fast path on CPU). The copy is checked against the model's own output on a probe input
  before it is used; a model that cannot be traced, a copy that raises or disagrees (beyond float32
  rounding), or a model over :data:`COPY_LIMIT_BYTES` falls back to the model itself — the result names the
  path taken. The caller's model is never modified: the copy is made with ``copy.deepcopy``. Copies are kept
  per model (weakly) and rebuilt when any parameter or buffer changes (storage or in-place version).
* :class:`ChunkSizer` picks how many rows each forward takes. Per-row cost is not monotone in the batch:
  ResNet-50 on two CPU cores costs about 60 ms per image at 4–8 rows and 90–110 ms at 16–32 (its
  intermediates fall out of cache), while a small MobileNet is cheapest at 32. ``None`` tries each of
  :data:`ChunkSizer.CANDIDATES` twice on real work (nothing is computed twice) and keeps the size with the
  lowest time per row; a given integer is used as is.
"""

from __future__ import annotations

import copy
import itertools
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from verification.cam.targets import output_tensor

__all__ = ["COPY_LIMIT_BYTES", "ChunkSizer", "inference_forward"]

COPY_LIMIT_BYTES = 1 << 30
"""Models whose parameters and buffers take more than this many bytes are not copied."""

Forward = Callable[[Tensor], Tensor]

_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], nn.Module | None, str]] = (
    weakref.WeakKeyDictionary()
)


def _state_fingerprint(module: nn.Module) -> tuple[Any, ...]:
    return tuple(
        (t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device)
        for t in itertools.chain(module.parameters(), module.buffers())
    )


def _state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def _candidates(module: nn.Module) -> list[tuple[str, Callable[[], nn.Module]]]:
    def folded() -> nn.Module:
        from torch.fx.experimental.optimization import fuse

        return fuse(module, inplace=False).eval().to(memory_format=torch.channels_last)

    def plain() -> nn.Module:
        return copy.deepcopy(module).eval().to(memory_format=torch.channels_last)

    return [
        ("inference copy: BatchNorm folded into the convolutions, channels_last", folded),
        ("inference copy: channels_last", plain),
    ]


def _agrees(out: Tensor, reference: Tensor) -> bool:
    if out.shape != reference.shape or not bool(torch.isfinite(out).all()):
        return False
    ref = reference.to(out.dtype)
    tol = 1e-3 * (1.0 + float(ref.abs().max()))
    return float((out - ref).abs().max()) <= tol


def inference_forward(module: nn.Module, probe: Tensor, reference: Tensor) -> tuple[Forward, str]:
    """A forward function for many no-grad forwards of ``module`` and a note saying which path it takes.

    ``probe`` is one real input (1, C, H, W) and ``reference`` the model's own output tensor for it (eval
    mode); a candidate copy is used only when its output on the probe agrees with ``reference`` within
    ``1e-3 · (1 + max|reference|)``. Call the returned function under ``torch.inference_mode()``; it returns
    the model's prediction tensor (see :func:`verification.cam.targets.output_tensor`).
    """
    fingerprint = _state_fingerprint(module)
    cached = _cache.get(module)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, *_build(module, probe, reference))
        _cache[module] = cached
    _, fast, note = cached
    if fast is None:
        return (lambda x: output_tensor(module(x))), note
    fast_module = fast
    return (lambda x: output_tensor(fast_module(_channels_last(x)))), note


def _build(module: nn.Module, probe: Tensor, reference: Tensor) -> tuple[nn.Module | None, str]:
    if _state_bytes(module) > COPY_LIMIT_BYTES:
        return None, f"the model itself (over {COPY_LIMIT_BYTES >> 20} MB: not copied)"
    reasons = []
    for note, make in _candidates(module):
        try:
            candidate = make()
            with torch.inference_mode():
                out = output_tensor(candidate(_channels_last(probe)))
        except Exception as err:  # a model fx cannot trace, or one that refuses channels_last input
            reasons.append(f"{note.split(': ', 1)[1]}: {type(err).__name__}")
            continue
        if _agrees(out, reference):
            return candidate, note
        reasons.append(f"{note.split(': ', 1)[1]}: output differs")
    return None, "the model itself (" + "; ".join(reasons) + ")"


class ChunkSizer:
    """Rows per forward: ``size`` when given, else the fastest of :data:`CANDIDATES` rows per forward.

    In auto mode each candidate is timed twice on real chunks (the first call at a new shape pays one-off
    kernel set-up, the second is kept); afterwards the size with the lowest seconds per row is used. Auto
    mode only tunes when there is enough work (``total`` rows ≥ :data:`MIN_ROWS_TO_TUNE`); otherwise it uses
    :data:`DEFAULT`.
    """

    CANDIDATES = (4, 8, 16, 32)
    DEFAULT = 16
    MIN_ROWS_TO_TUNE = 4 * sum(CANDIDATES)

    def __init__(self, size: int | None, total: int) -> None:
        self.fixed = size
        self.best: int | None = None if size is None and total >= self.MIN_ROWS_TO_TUNE else self.DEFAULT
        self._plan = [c for c in self.CANDIDATES for _ in range(2)]
        self._per_row: dict[int, float] = {}
        self._started = 0.0

    @property
    def largest(self) -> int:
        """The most rows any chunk can take."""
        return self.fixed if self.fixed is not None else max(self.CANDIDATES)

    def next(self, remaining: int) -> int:
        if self.fixed is not None:
            return min(self.fixed, remaining)
        size = self.best if self.best is not None else self._plan[0]
        self._started = time.perf_counter()
        return min(size, remaining)

    def done(self, rows: int) -> None:
        """Record that the chunk handed out by :meth:`next` (``rows`` rows) has been computed."""
        if self.fixed is not None or self.best is not None:
            return
        seconds = time.perf_counter() - self._started
        size = self._plan.pop(0)
        if rows == size and len(self._plan) % 2 == 0:  # the second of the two timings of this size
            self._per_row[size] = seconds / rows
        if not self._plan:
            self.best = min(self._per_row, key=self._per_row.__getitem__) if self._per_row else self.DEFAULT

    def describe(self) -> str:
        if self.fixed is not None:
            return str(self.fixed)
        if self._per_row:
            timings = ", ".join(f"{k}: {v * 1e3:.1f} ms/row" for k, v in sorted(self._per_row.items()))
            return f"auto → {self.best} ({timings})"
        return f"auto → {self.best if self.best is not None else self.DEFAULT} (too little work to tune)"
