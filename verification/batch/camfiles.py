"""Per-image CAM files written by ``python -m verification cam``: one ``.npz`` per image (no pickle)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from verification.batch.rows import Row
from verification.errors import BundleError
from verification.io.files import read_npz_file
from verification.io.safejson import loads_bounded

if TYPE_CHECKING:
    from verification.batch.jobs import ImageCams

__all__ = ["CAM_FILE_SCHEMA", "MAX_CAM_FILE_BYTES", "load_image_cams", "save_image_cams"]

CAM_FILE_SCHEMA = "verification.batch.image_cams"


def save_image_cams(path: str | Path, row: Row[ImageCams], *, class_names: Sequence[str]) -> Path:
    """Write one image's maps as ``.npz``: ``map/<method>@<layer>`` (H, W) in [0, 1], ``raw/<key>`` (h, w),
    ``logits`` (K,), ``probs`` (K,), and ``meta`` (a JSON string: schema, source path, target, predicted
    class, class names, constant flags, provenance). Readable with ``np.load(path, allow_pickle=False)``.
    A multi-label model's row adds ``label_map/<i>/<key>`` for each label ``meta["labels"][i]``."""
    cams = row.result
    if cams is None:
        raise ValueError(f"{row.path}: an error row has no maps to save ({row.error})")
    arrays: dict[str, np.ndarray] = {"logits": cams.logits, "probs": cams.probs}
    for key in cams.maps:
        arrays[f"map/{key}"] = cams.maps[key]
        arrays[f"raw/{key}"] = cams.raw[key]
    labels = list(cams.label_maps)  # a multi-label model: one map per label it calls present
    for i, label in enumerate(labels):
        for key, m in cams.label_maps[label].items():
            arrays[f"label_map/{i}/{key}"] = m
    meta = {
        "schema": CAM_FILE_SCHEMA,
        "schema_version": 1,
        "source": row.path,
        "content_hash": row.content_hash,
        "pred": cams.pred,
        "target": cams.target,
        "class_names": list(class_names),
        "constant": {k: bool(v) for k, v in cams.constant.items()},
        "provenance": cams.provenance,
        **({"labels": labels} if labels else {}),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return Path(path)


MAX_CAM_FILE_BYTES = 256 << 20
"""The most array bytes one per-image CAM file may decode to (a 224² map and raw map per method take 0.4 MB;
this leaves room for hundreds of methods, layers and labels at 2,048²)."""


def load_image_cams(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_image_cams`: ``(maps, raw, meta)``; meta also holds logits/probs.
    The file is not trusted: the zip and each array's header are checked before anything is inflated or
    allocated (:func:`verification.io.files.read_npz_file`, at most :data:`MAX_CAM_FILE_BYTES`), the meta
    JSON is parsed with bounds; a bad file raises BundleError (InputTooLargeError for the size) naming it."""
    data = read_npz_file(Path(path), max_bytes=MAX_CAM_FILE_BYTES, error=BundleError)
    for key in ("meta", "logits", "probs"):
        if key not in data:
            raise BundleError(f"'{path}' is not a per-image CAM file (no '{key}' array)")
    meta = loads_bounded(str(data.pop("meta")), f"'{path}' meta", error=BundleError, max_bytes=8 << 20)
    if not isinstance(meta, dict) or meta.get("schema") != CAM_FILE_SCHEMA:
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise BundleError(f"{path} is not a per-image CAM file (schema {schema!r})")
    maps = {k[4:]: v for k, v in data.items() if k.startswith("map/")}
    raw = {k[4:]: v for k, v in data.items() if k.startswith("raw/")}
    meta["logits"] = data["logits"]
    meta["probs"] = data["probs"]
    if meta.get("labels"):  # {label: {key: map}} of a multi-label model
        meta["label_maps"] = {
            label: {k.split("/", 2)[2]: v for k, v in data.items() if k.startswith(f"label_map/{i}/")}
            for i, label in enumerate(meta["labels"])
        }
    return maps, raw, meta
