"""Progress reporting and cancellation for long computations (Score-CAM, Ablation-CAM, attributions).

A progress callback is any callable ``callback(done, total, message)``. ``done`` and ``total`` count units
of work (for the perturbation methods: masked or ablated forward rows). Returning ``False`` (exactly
``False``, not merely falsy) asks the computation to stop: it then raises
:class:`~verification.errors.CancelledError` after
removing every hook it registered. Returning ``None`` or ``True`` continues. A two-argument callback
``callback(done, total)`` is accepted too (it is called without the message).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from verification.errors import CancelledError

__all__ = ["CancelledError", "Progress", "report"]


class Progress(Protocol):
    """``callback(done, total, message) -> bool | None``; return ``False`` to cancel."""

    def __call__(self, done: int, total: int, message: str, /) -> bool | None: ...


def report(progress: Progress | None, done: int, total: int, message: str) -> None:
    """Call ``progress`` if given; raise :class:`CancelledError` when it returns ``False``."""
    if progress is None:
        return
    args: tuple[Any, ...] = (int(done), int(total), message)
    if not _takes_message(progress):
        args = args[:2]
    if progress(*args) is False:
        raise CancelledError(f"Cancelled by the progress callback after {done} of {total} steps ({message}).")


def _takes_message(fn: Any) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: assume the documented protocol
        return True
    try:
        sig.bind(0, 0, "")
    except TypeError:
        return False
    return True
