"""What every CAM entry point takes as a model: an ``nn.Module`` or a ``LoadedModel`` (its ``.module`` runs).

The one place that unwraps it, for the engine, the perturbation and attribution methods, layer discovery,
chunking and the per-model lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from torch import nn

from verification.errors import InvalidInputError

if TYPE_CHECKING:
    from verification.io.records import LoadedModel

ModelLike: TypeAlias = "nn.Module | LoadedModel"
"""A module, or a loaded model (its ``module`` is what runs; its ``task`` chooses the default target)."""


def unwrap_module(model: object) -> object:
    """``model.module`` for a LoadedModel (anything with a ``module``), else ``model`` itself, unchecked: for
    the callers that pass anything else through (the lock, batch limits) so that it meets its typed error."""
    return getattr(model, "module", model)


def as_module(model: object) -> nn.Module:
    """The ``nn.Module`` behind ``model`` (a module or a LoadedModel); InvalidInputError (also a TypeError)
    for anything else."""
    module = unwrap_module(model)
    if not isinstance(module, nn.Module):
        raise InvalidInputError(f"expected an nn.Module or a LoadedModel, got {type(model).__name__}")
    return module
