"""Rows: one image's result, and its encoding for crossing process boundaries (Ray) as npz bytes — arrays,
numbers and strings only, no pickle either way."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

__all__ = ["Row", "decode_row", "encode_row"]

Row = dict[str, Any]
"""One image's result: ``index``, ``path``, ``error`` (None or the message) plus job-specific fields."""


def encode_row(row: Row) -> bytes:
    """Serialise a row (nested dicts of arrays, numbers, strings, None) to npz bytes."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    _flatten(row, "", arrays, scalars)
    arrays["__scalars__"] = np.array(json.dumps(scalars, allow_nan=True))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_row(data: bytes) -> Row:
    """Inverse of :func:`encode_row`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    flat: dict[str, Any] = json.loads(str(arrays.pop("__scalars__")))
    flat.update(arrays)
    row: Row = {}
    for key, value in flat.items():
        parts = key.split("\x1f")
        node = row
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return row


def _flatten(value: Any, prefix: str, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value and prefix:
            scalars[prefix] = {}
        for k, v in value.items():
            _flatten(v, f"{prefix}\x1f{k}" if prefix else str(k), arrays, scalars)
    elif isinstance(value, np.ndarray):
        arrays[prefix] = value
    elif isinstance(value, np.generic):
        scalars[prefix] = value.item()
    elif isinstance(value, (list, tuple)):
        scalars[prefix] = list(value)
    else:
        scalars[prefix] = value
