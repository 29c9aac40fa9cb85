"""Concurrent calls on one shared model: a lock the backend owns per model, and hooks scoped to their call.

A backend used from notebooks, Ray actors and web-server threads gets the same ``nn.Module`` from several
threads at once. Every entry point that runs the model (CAM capture, Score-CAM, Ablation-CAM, attributions,
the layer scan, feature maps, faithfulness) changes state that lives *on the module*, not in the call:

- forward hooks (registered on the module, so without care they fire for every forward that runs while they
  are registered, in any thread: one call's hook recorded another call's activations and, once that call
  had finished and cleared its buffers, raised ``KeyError('features')`` inside the other forward — the
  ``ModelForwardError: 'features'`` of issue #14);
- the train/eval flags that :func:`~verification.cam.layers.eval_mode` flips and restores (a call that
  restores ``train()`` while another is mid-forward would switch the other's batch norm to batch statistics);
- per-model caches (the layer scan, Score-CAM's inference copy) that are filled on first use.

Two measures, both needed:

1. :func:`model_lock` — one re-entrant lock per model object, owned by the backend and taken by every entry
   point for the whole call (:func:`exclusive`). Calls on the *same* model run one after another; calls on
   different models do not wait for each other. What that costs, measured with ``bench/cam_concurrency.py``
   (4 threads × 6 Grad-CAM calls, demo model, batch 4, one intra-op thread, 2-core machine at load ≈ 12):
   2.27 s on one shared model, 1.81 s on four private copies, 1.61 s in sequence — a caller who wants calls
   to overlap gives each thread its own copy; correctness never depends on it. The lock is re-entrant
   because the entry points call each other (``compute_cams`` → ``capture`` → the layer scan).
   A per-call alternative without a lock would have to make the train/eval flags per-thread, which PyTorch
   does not support.
2. :func:`this_thread_only` — every hook the backend registers acts only on forwards run by the thread that
   registered it. The lock orders the backend's own calls, but the caller may run ``model(x)`` directly in
   another thread at the same time (a web server answering predictions while a CAM is computed); without
   this, our capture hook would take that forward's activations for its own and Ablation-CAM's hook would
   zero channels in the caller's prediction. (That foreign forward does still see eval mode while a backend
   call holds the model; callers who keep a model in train mode and want to exclude that too can hold
   ``model_lock(model)`` around their own forwards — it is the same lock.)

Forwards that a model itself spreads over worker threads (``nn.DataParallel``) are not supported by the
thread-scoped hooks: the replica's hooks would not fire and the call reports the layer as not run.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from torch import nn

from verification.cam.modules import unwrap_module

P = ParamSpec("P")
R = TypeVar("R")

_LOCKS: weakref.WeakKeyDictionary[object, threading.RLock] = weakref.WeakKeyDictionary()
_REGISTRY_GUARD = threading.Lock()
# Modules that cannot be weak dictionary keys (a subclass with __eq__ and no __hash__) share this one lock.
_FALLBACK = threading.RLock()


def model_lock(model: object) -> threading.RLock:
    """The backend's re-entrant lock for ``model`` (an ``nn.Module`` or an object with ``.module``).

    The same object for the same model for as long as the model lives (weakly held: the lock never keeps a
    model alive); distinct models get distinct locks.
    """
    module = unwrap_module(model)
    with _REGISTRY_GUARD:
        try:
            lock = _LOCKS.get(module)
            if lock is None:
                lock = threading.RLock()
                _LOCKS[module] = lock
        except TypeError:
            return _FALLBACK
        return lock


def exclusive(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``fn(model, ...)`` holding :func:`model_lock` of its first argument, when that is a
    model (anything else is passed through untouched so that ``fn`` raises its own typed error)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        model = args[0] if args else kwargs.get("model")
        module = unwrap_module(model)
        if not isinstance(module, nn.Module):
            return fn(*args, **kwargs)
        with model_lock(module):
            return fn(*args, **kwargs)

    return wrapper


Hook = Callable[..., Any]


def this_thread_only(hook: Hook) -> Hook:
    """Wrap a forward hook so that it acts only on forwards run by the thread that wraps it (registration
    time); in any other thread it returns None (PyTorch then keeps that forward's output unchanged)."""
    owner = threading.get_ident()

    @functools.wraps(hook)
    def scoped(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        return hook(*args, **kwargs)

    return scoped
