"""Rows: one image's outcome in a batch job (a frozen record), and its encoding for crossing process
boundaries (Ray) as npz bytes — arrays, numbers and strings only, no pickle either way."""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["Failure", "Row", "decode_row", "encode_row"]

R = TypeVar("R")


@dataclass(frozen=True)
class Row(Generic[R]):
    """One image's outcome: where it came from (``index`` in the job's paths, ``path``, ``content_hash``) and
    either the job's ``result`` for it or the ``error`` message that left it out."""

    index: int
    path: str
    error: str | None = None
    content_hash: str = ""
    result: R | None = None


@dataclass(frozen=True)
class Failure:
    """What a job returns for an image that failed on its own (NaN in its tensor, a model error on it)."""

    message: str


def encode_row(row: Row[Any]) -> bytes:
    """Serialise a row to npz bytes. Its result is a flat frozen dataclass whose fields are arrays, numbers,
    strings, None, or (nested) string-keyed dicts of those."""
    fields: dict[str, Any] = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    result = fields.pop("result")
    if result is not None:
        fields["result"] = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    _flatten(fields, "", arrays, scalars)
    arrays["__scalars__"] = np.array(json.dumps(scalars, allow_nan=True))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_row(data: bytes, result_type: type[R]) -> Row[R]:
    """Inverse of :func:`encode_row`; ``result_type`` is the class of the job's results."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    flat: dict[str, Any] = json.loads(str(arrays.pop("__scalars__")))
    flat.update(arrays)
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split("\x1f")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    result = tree.pop("result", None)
    return Row(**tree, result=None if result is None else result_type(**result))


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
