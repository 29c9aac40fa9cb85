"""DICOMweb addresses wherever a folder of images is accepted: :func:`materialize` retrieves the instances a
``dicomweb+http(s)://…/studies/<uid>[/series/<uid>[/instances/<uid>]]`` source names into a private temporary
folder (mode 0700, removed when the process exits), so the batch commands read them with the same loader
as files. :func:`origin` tells, for such a file, which server and instance it came from (for writing results
back).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verification.errors import PacsError
from verification.io.budget import Budget
from verification.pacs.client import (
    InstanceRef,
    PacsClient,
    PacsConfig,
    PacsLimits,
    PacsSource,
    parse_source,
)

__all__ = ["CamRecord", "Origin", "materialize", "origin", "store_cam_records"]


@dataclass(frozen=True)
class Origin:
    root: str
    ref: InstanceRef


_lock = threading.Lock()
_dir: Path | None = None
_origins: dict[str, Origin] = {}


def _cache_dir() -> Path:
    global _dir
    with _lock:
        if _dir is None or not _dir.is_dir():
            _dir = Path(tempfile.mkdtemp(prefix="verification-dicomweb-"))  # 0700
            atexit.register(shutil.rmtree, _dir, True)
        return _dir


def materialize(
    source: str,
    *,
    env: Mapping[str, str] | None = None,
    limits: PacsLimits | None = None,
    config: PacsConfig | None = None,
) -> list[Path]:
    """Retrieve the instances of a DICOMweb source into files; returns their paths, in series order.

    All or nothing: a failure part-way removes the files already written and raises the typed error. The
    count and bytes are bounded by ``limits``; each file's decoding cost is checked from its header by the
    batch loader (``load_image``) before it is decoded, as for any file.
    """
    parsed = parse_source(source)
    config = config or PacsConfig.from_env(parsed, env)
    folder = Path(tempfile.mkdtemp(prefix="src-", dir=_cache_dir()))
    paths: list[Path] = []
    refs: list[InstanceRef] = []
    try:
        with PacsClient(config) as client:
            for item in client.iter_retrieve(parsed, limits=limits, budget=Budget(), retain=False):
                path = folder / item.name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(item.data)
                paths.append(path)
                refs.append(item.ref)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    with _lock:
        for path, ref in zip(paths, refs, strict=True):
            _origins[str(path.resolve())] = Origin(parsed.root, ref)
    return paths


def origin(path: str | Path) -> Origin | None:
    """Where a file made by :func:`materialize` came from (None for any other file)."""
    with _lock:
        return _origins.get(str(Path(path).resolve()))


@dataclass(frozen=True)
class CamRecord:
    """One image's maps from a batch command: the file it was read from, its display picture, the maps by
    ``method@layer`` key (each (h, w) in [0, 1]) and the class explained."""

    path: str
    display: np.ndarray = field(repr=False)
    maps: Mapping[str, np.ndarray] = field(repr=False)
    target: str = ""


def store_cam_records(
    records: Sequence[CamRecord],
    *,
    model: str,
    verdict: str = "not verified",
    env: Mapping[str, str] | None = None,
) -> int:
    """Store the heatmaps of images read from DICOMweb sources back into their studies (one new series per
    study, one STOW-RS request per study, every object built and validated first). Returns how many objects
    were stored. Raises PacsError for an image that did not come from a PACS."""
    import pydicom

    from verification.pacs.writeback import HeatmapResult, store_overlays

    by_root: dict[str, list[HeatmapResult]] = {}
    for rec in records:
        where = origin(rec.path)
        if where is None:
            raise PacsError(
                f"{Path(rec.path).name} was not read from a PACS; only images from dicomweb+ sources can be "
                "stored back"
            )
        source = pydicom.dcmread(rec.path, stop_before_pixels=True)
        for key, cam in rec.maps.items():
            method, _, layer = key.partition("@")
            by_root.setdefault(where.root, []).append(
                HeatmapResult(
                    source=source, display=rec.display, cam=cam, model=model, method=method, layer=layer,
                    target=rec.target, verdict=verdict,
                )
            )  # fmt: skip
    stored = 0
    for root, items in by_root.items():
        with PacsClient(PacsConfig.from_env(PacsSource(root), env)) as client:
            stored += len(store_overlays(client, items))
    return stored
