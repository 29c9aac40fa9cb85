"""Engines that run a batch job over image paths: ``local`` (a DataLoader here) or ``ray`` (Ray Data).

Both call the same job code on batches of the same composition, so they give the same per-image numbers. Rows
come back in path order whatever the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from verification.batch import BatchJob, Row
from verification.errors import VerificationError

__all__ = ["EngineOptions", "EngineUnavailableError", "progress_disabled", "run_job"]

EngineName = Literal["local", "ray"]
R = TypeVar("R")


class EngineUnavailableError(VerificationError):
    """The requested engine cannot run here (package not installed, cluster unreachable)."""


@dataclass(frozen=True)
class EngineOptions:
    """``batch_size`` images per forward+backward; ``workers`` decoding processes (local) or model replicas
    (ray: one actor each, ``0`` meaning 1); ``ray_address`` joins an existing cluster, otherwise a local one
    is started with ``ray_num_cpus`` CPUs."""

    engine: EngineName = "local"
    batch_size: int = 16
    workers: int = 0
    ray_address: str | None = None
    ray_num_cpus: int = 2


def progress_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for ``progress``: None (tqdm then shows the bar only when stderr is a terminal) or
    the opposite of the flag."""
    return None if progress is None else not progress


def run_job(
    job: BatchJob[R], paths: Sequence[str | Path], options: EngineOptions, *, progress: bool | None = None
) -> Iterator[Row[R]]:
    """Run ``job`` over ``paths`` and yield one row per path, in order.

    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal, False: never).
    """
    if options.engine == "local":
        from verification.engines.local import run_local

        return run_local(job, paths, options, progress=progress)
    if options.engine == "ray":
        from verification.engines.ray import run_ray

        return run_ray(job, paths, options, progress=progress)
    raise ValueError(f"unknown engine {options.engine!r}; use 'local' or 'ray'")
