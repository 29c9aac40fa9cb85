"""One place that knows how many rows a model accepts per forward.

A ``torch.export`` program exported the default way (``torch.export.export(model, (x,))``) has its batch size
fixed to the example's (usually 1); one exported with ``dynamic_shapes=({0: Dim("batch", min=2, max=64)},)``
accepts a range. The loader (:mod:`verification.io.models`) reads the range once, from the program's input
specs and range constraints, and records it on the :class:`~verification.io.records.LoadedModel`
(``min_batch`` / ``max_batch`` / ``fixed_batch``) and on its module (:func:`set_batch_limits`). Every
computation that batches calls the model through :func:`run_chunked` (or :func:`chunk_bounds` when it has to
run per chunk itself, e.g. with hooks): chunks of at most ``max_batch`` rows, and a chunk smaller than
``min_batch`` (the last one, when the batch is fixed to exactly N) is padded with copies of its last row
whose outputs are dropped. A model without limits (every eager module) is called once with the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from verification.cam.modules import ModelLike, unwrap_module

__all__ = [
    "batch_limits",
    "chunk_bounds",
    "export_batch_limits",
    "fixed_batch",
    "limit_chunk",
    "pad_rows",
    "run_chunked",
    "set_batch_limits",
    "take_rows",
]

_ATTR = "_verification_batch_limits"

T = TypeVar("T")


def set_batch_limits(module: nn.Module, min_batch: int, max_batch: int | None) -> None:
    """Record on ``module`` the batch sizes it accepts (``max_batch`` None: no upper bound). Copies made with
    ``copy.deepcopy`` keep it."""
    lo = max(1, int(min_batch))
    hi = None if max_batch is None else max(lo, int(max_batch))
    object.__setattr__(module, _ATTR, (lo, hi))


def batch_limits(model: ModelLike) -> tuple[int, int | None]:
    """``(min_batch, max_batch)`` of a LoadedModel or a module; ``(1, None)`` when nothing limits it.

    Read from what the loader recorded; a torch.export program unflattened by the caller (not through the
    loader) is inspected on first use (its input placeholders and range constraints) and the answer kept.
    """
    module = unwrap_module(model)
    if not isinstance(module, nn.Module):
        return 1, None
    limits = getattr(module, _ATTR, None)
    if isinstance(limits, tuple) and len(limits) == 2:
        return limits[0], limits[1]
    placeholders = getattr(module, "input_placeholders", None)
    ranges = getattr(module, "range_constraints", None)
    if placeholders and isinstance(ranges, dict):
        val = placeholders[0].meta.get("val")
        shape = tuple(val.shape) if val is not None and hasattr(val, "shape") else ()
        set_batch_limits(module, *export_batch_limits(shape, ranges))
        return batch_limits(module)
    return 1, None


def export_batch_limits(shape: tuple[Any, ...], range_constraints: Any) -> tuple[int, int | None]:
    """``(min, max)`` rows a torch.export program accepts, from its first input's exported ``shape`` and the
    program's ``range_constraints``: a static batch dimension is fixed (min = max); a dynamic one takes its
    symbol's range (max None when unbounded)."""
    if not shape:
        return 1, None
    batch = shape[0]
    if isinstance(batch, int):
        return max(1, batch), max(1, batch)
    expr = getattr(getattr(batch, "node", None), "expr", None)
    bounds = range_constraints.get(expr) if expr is not None else None
    if bounds is None:
        return 1, None

    def whole(v: Any) -> int | None:
        try:
            n = int(v)
        except (TypeError, ValueError, OverflowError, AttributeError):  # sympy's infinities
            return None
        return n if 0 <= n < 1 << 31 else None

    lo, hi = whole(bounds.lower), whole(bounds.upper)
    lo = max(1, lo or 1)
    return lo, hi if hi is None else max(lo, hi)


def fixed_batch(model: ModelLike) -> int | None:
    """The one batch size the model accepts, or None when it accepts more than one."""
    lo, hi = batch_limits(model)
    return lo if hi == lo else None


def chunk_bounds(model: ModelLike, n: int, size: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges covering ``n`` rows, each at most the model's ``max_batch`` (and at most
    ``size`` when given). Callers that run the chunk themselves pad it with :func:`pad_rows`."""
    _, hi = batch_limits(model)
    step = n if size is None else size
    if hi is not None:
        step = min(step, hi)
    step = max(1, step)
    for start in range(0, n, step):
        yield start, min(start + step, n)


def limit_chunk(model: ModelLike, size: int | None, *, auto_up_to: int = 32) -> int | None:
    """A chunk size (rows per forward) that fits the model: ``size`` capped at ``max_batch`` and raised to
    ``min_batch``; for ``size`` None (tune it), ``max_batch`` when that is at most ``auto_up_to``."""
    lo, hi = batch_limits(model)
    if hi is None:
        return size if size is None else max(size, lo)
    if size is None:
        return hi if hi <= auto_up_to else None
    return min(max(size, lo), hi)


def pad_rows(model: ModelLike, x: Tensor) -> Tensor:
    """``x`` with copies of its last row appended up to the model's ``min_batch`` (``x`` itself if it has
    enough rows). Gradients flow through the copy."""
    lo, _ = batch_limits(model)
    r = int(x.shape[0])
    if r >= lo or r == 0:
        return x
    return torch.cat([x, x[-1:].expand(lo - r, *x.shape[1:])], dim=0)


def take_rows(out: Any, rows: int) -> Any:
    """The first ``rows`` rows of a model output: a tensor, or a tuple/list/dict of them."""
    if isinstance(out, Tensor):
        return out[:rows]
    if isinstance(out, tuple | list):
        return type(out)(take_rows(o, rows) for o in out)
    if isinstance(out, dict):
        return {k: take_rows(v, rows) for k, v in out.items()}
    return out


def _cat(parts: list[Any]) -> Any:
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, Tensor):
        return torch.cat(parts, dim=0)
    if isinstance(first, tuple | list):
        return type(first)(_cat([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _cat([p[k] for p in parts]) for k in first}
    raise TypeError(f"cannot join chunk outputs of type {type(first).__name__}")


def run_chunked(model: ModelLike, x: Tensor, fn: Callable[[Tensor], T], *, size: int | None = None) -> T:
    """``fn(x)`` computed in chunks of rows the model accepts, outputs joined along dimension 0.

    ``fn`` maps a batch of rows (K, ...) to an output whose first dimension is K (a tensor, or a
    tuple/list/dict of them). Without batch limits (and without ``size``) it is called once with ``x``;
    otherwise with chunks of at most ``max_batch`` (and ``size``) rows, a short chunk padded to ``min_batch``
    with copies of its last row, whose outputs are dropped. Autograd flows through (the joins are
    ``torch.cat``).
    """
    lo, hi = batch_limits(model)
    n = int(x.shape[0])
    if (hi is None or n <= hi) and n >= lo and (size is None or n <= size):
        return fn(x)
    parts = []
    for start, stop in chunk_bounds(model, n, size):
        out = fn(pad_rows(model, x[start:stop]))
        parts.append(take_rows(out, stop - start))
    return _cat(parts)
