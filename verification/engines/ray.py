"""The Ray engine: Ray Data batches, one model replica per actor, loaded once in the actor's ``__init__``.

``ray_address`` joins a running cluster (``ray.init(address=...)``; the model and image paths must be
readable on its nodes, and this package is shipped to them with ``runtime_env={"py_modules": ...}``); without
it a local Ray instance is started with ``ray_num_cpus`` CPUs. Ray starts quietly (no dashboard, worker logs
not forwarded) and is shut down afterwards when this call started it.

Each Ray Data item is one chunk of ``batch_size`` consecutive paths, cut exactly where the local engine's
DataLoader cuts its batches; the actor runs the job on that chunk as one model batch. Batch composition is
therefore the same as local, and so are the numbers. Rows return as npz bytes (no pickle) and are re-ordered
by index.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

import verification
from verification.batch import BatchJob, ImageDataset, Row, collate_items, decode_row, encode_row
from verification.engines import EngineOptions, EngineUnavailableError, progress_disabled

log = logging.getLogger(__name__)
R = TypeVar("R")


class JobActor:
    """Ray Data callable class: loads the job's model once per actor, then runs chunks of paths."""

    def __init__(self, job: BatchJob[Any]) -> None:
        self.job = job
        self.model = job.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        encoded: list[bytes] = []
        chunk_ids: list[int] = []
        for chunk_id, first, paths in zip(batch["chunk"], batch["first"], batch["paths"]):
            dataset = ImageDataset(
                [str(p) for p in paths],
                self.model,
                keep_display=self.job.keep_display,
                first_index=int(first),
            )
            rows = self.job.run(collate_items([dataset[i] for i in range(len(dataset))]))
            encoded.extend(encode_row(row) for row in rows)
            chunk_ids.extend([int(chunk_id)] * len(rows))
        out = np.empty(len(encoded), dtype=object)
        out[:] = encoded
        return {"chunk": np.asarray(chunk_ids, dtype=np.int64), "row": out}


def _import_ray() -> ModuleType:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EngineUnavailableError(
            "--engine ray needs the 'ray' package (pip install 'ray[data]'); it is not installed here. "
            "Use --engine local, or install ray."
        ) from exc
    return ray


def run_ray(
    job: BatchJob[R], paths: Sequence[str | Path], options: EngineOptions, *, progress: bool | None = None
) -> Iterator[Row[R]]:
    """Yield one row per path in path order, computed by Ray actors."""
    ray = _import_ray()
    size = options.batch_size
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    names = [str(Path(p).resolve()) for p in paths]
    starts = range(0, len(names), size)
    chunk_sizes = [len(names[start : start + size]) for start in starts]
    chunks = [{"chunk": c, "first": s, "paths": names[s : s + size]} for c, s in enumerate(starts)]
    started = _init(ray, options)
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # Ray 2.60's DataContext warns about its own deprecated defaults; and max_restarts=0 (a failed
            # actor fails the run: no silent retry, no notice about restartable actors) is honoured through
            # **ray_remote_args though flagged as deprecated there.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.execution_options.preserve_order = True
            dataset = ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks))).map_batches(
                JobActor,
                fn_constructor_args=(job,),
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=max(1, options.workers)),
                num_cpus=1,
                batch_format="numpy",
                max_restarts=0,
            )
        pending: dict[int, list[Row[R]]] = {}
        next_chunk = 0
        with tqdm(total=len(names), unit="img", disable=progress_disabled(progress), leave=False) as bar:
            for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for chunk_id, data in zip(out["chunk"], out["row"]):
                    pending.setdefault(int(chunk_id), []).append(decode_row(bytes(data), job.result_type))
                # Yield whole chunks in order as soon as they are complete.
                while next_chunk in pending and len(pending[next_chunk]) == chunk_sizes[next_chunk]:
                    rows = [
                        dataclasses.replace(row, path=str(paths[row.index]))
                        for row in sorted(pending.pop(next_chunk), key=lambda r: r.index)
                    ]
                    bar.update(len(rows))
                    yield from rows
                    next_chunk += 1
        if next_chunk != len(chunks):
            raise EngineUnavailableError(
                f"Ray returned {next_chunk} of {len(chunks)} batches; the run is incomplete"
            )
    finally:
        if started:
            ray.shutdown()


def _init(ray: ModuleType, options: EngineOptions) -> bool:
    """Start or join Ray quietly; return whether this call did (and so must shut it down)."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    package_root = str(Path(verification.__file__).resolve().parent.parent)
    try:
        if options.ray_address:
            ray.init(
                address=options.ray_address,
                runtime_env={"py_modules": [verification]},
                **common,
            )
        else:
            pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
            ray.init(
                num_cpus=options.ray_num_cpus,
                runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
                **common,
            )
    except Exception as exc:  # Ray raises bare Exception when a node fails to start
        where = options.ray_address or "a local instance"
        raise EngineUnavailableError(f"could not start or join Ray at {where}: {exc}") from exc
    return True
