"""The CAM result record: one map per (method, layer) for a batch, with provenance; saved as `.npz` + JSON."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verification.errors import BundleError
from verification.io.files import read_json_file, read_npz_file

SCHEMA_VERSION = 1
SCHEMA_NAME = "verification.cam.CamResult"
_ARRAYS = ("raw", "maps", "logits", "probs", "constant")
MAX_RESULT_BYTES = 2 << 30
"""The most array bytes :meth:`CamResult.load` reads (checked from the zip and ``.npy`` headers before
inflating): raw and normalised maps of about 5,000 images at 224² in float32."""
MAX_MANIFEST_BYTES = 16 << 20


@functools.cache
def package_version() -> str:
    """Version of this project as installed, else the one in pyproject (a source checkout)."""
    from importlib import metadata

    try:
        return metadata.version("attention-verification")
    except metadata.PackageNotFoundError:
        return "0.1.0+source"


def base_provenance() -> dict[str, str]:
    """Library versions and the time, for every record this package writes."""
    import torch
    import torchvision

    return {
        "package": package_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class CamResult:
    """Maps of one method at one layer for a batch of N inputs.

    ``raw`` (N, h, w) float32 is the map before ReLU and normalisation at the layer's resolution (for
    multi-scale Grad-CAM++ the fused map at input size); ``maps`` (N, H, W) float32 is ReLU → bilinear
    upsample to the input size → per-map min-max to [0, 1] (unless computed with ``normalize=False``).
    ``constant`` (N,) flags maps that were constant (or whose target was empty) and were set to zeros.
    ``targets`` holds the class index scored for each sample (-1 when the target is not a class),
    ``target_kind`` the kind of score.
    ``logits`` / ``probs`` (N, K) are the model's outputs (spatial means for segmentation models).
    """

    method: str
    layer: str
    raw: np.ndarray
    maps: np.ndarray
    targets: tuple[int, ...]
    target_kind: str
    logits: np.ndarray
    probs: np.ndarray
    constant: np.ndarray
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.maps.shape[0] if self.maps.ndim == 3 else -1
        if self.maps.ndim != 3 or self.raw.ndim != 3 or self.raw.shape[0] != n:
            raise BundleError(
                f"CamResult needs raw (N,h,w) and maps (N,H,W) with the same N; got {self.raw.shape} and "
                f"{self.maps.shape}"
            )
        if self.constant.shape != (n,) or len(self.targets) != n:
            raise BundleError(
                f"CamResult needs one constant flag and one target per map (N={n}); got "
                f"{self.constant.shape} flags and {len(self.targets)} targets"
            )
        if self.logits.ndim != 2 or self.logits.shape[0] != n or self.probs.shape != self.logits.shape:
            raise BundleError(
                f"CamResult needs logits and probs of shape (N={n}, K); got {self.logits.shape} and "
                f"{self.probs.shape}"
            )

    @property
    def n(self) -> int:
        return int(self.maps.shape[0])

    def __getitem__(self, index: int | slice) -> CamResult:
        """The result restricted to some samples of the batch, e.g. ``res[0]``."""
        sl = slice(index, index + 1) if isinstance(index, int) else index
        if isinstance(index, int) and not -self.n <= index < self.n:
            raise IndexError(f"sample {index} out of range for a batch of {self.n}")
        if isinstance(index, int) and index < 0:
            sl = slice(self.n + index, self.n + index + 1)
        return CamResult(
            method=self.method,
            layer=self.layer,
            raw=self.raw[sl],
            maps=self.maps[sl],
            targets=tuple(self.targets[sl]),
            target_kind=self.target_kind,
            logits=self.logits[sl],
            probs=self.probs[sl],
            constant=self.constant[sl],
            provenance=dict(self.provenance),
        )

    def save(self, path: str | Path) -> Path:
        """Write ``<stem>.npz`` (arrays) and ``<stem>.json`` (manifest); returns the `.npz` path."""
        npz, manifest = _paths(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            npz,
            raw=self.raw.astype(np.float32),
            maps=self.maps.astype(np.float32),
            logits=self.logits.astype(np.float32),
            probs=self.probs.astype(np.float32),
            constant=self.constant.astype(bool),
        )
        doc: dict[str, Any] = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "method": self.method,
            "layer": self.layer,
            "targets": [int(t) for t in self.targets],
            "target_kind": self.target_kind,
            "shapes": {name: list(getattr(self, name).shape) for name in _ARRAYS},
            "arrays": npz.name,
            "provenance": {str(k): str(v) for k, v in self.provenance.items()},
        }
        manifest.write_text(json.dumps(doc, indent=2, sort_keys=True))
        return npz

    @classmethod
    def load(cls, path: str | Path) -> CamResult:
        """Read a result written by :meth:`save`; raises BundleError on a missing file or another schema."""
        npz, manifest = _paths(path)
        if not manifest.is_file() or not npz.is_file():
            raise BundleError(f"CamResult needs both {npz.name} and {manifest.name} in {npz.parent}")
        doc = read_json_file(
            manifest, kind="CamResult manifest", advice="give the result's .json or .npz",
            max_bytes=MAX_MANIFEST_BYTES, error=BundleError,
        )  # fmt: skip
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
            schema = doc.get("schema") if isinstance(doc, dict) else None
            raise BundleError(f"{manifest} is not a CamResult manifest (schema {schema!r})")
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{manifest} has schema_version {version!r}; this version reads {SCHEMA_VERSION}. "
                "Recompute the maps with this version."
            )
        arrays = read_npz_file(npz, max_bytes=MAX_RESULT_BYTES, error=BundleError, names=_ARRAYS)
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise BundleError(f"{npz} is missing arrays: {', '.join(missing)}")
        for name, shape in doc.get("shapes", {}).items():
            if name in arrays and list(arrays[name].shape) != list(shape):
                raise BundleError(
                    f"{npz}: array {name} has shape {arrays[name].shape}, manifest says {shape}"
                )
        try:
            return cls(
                method=str(doc["method"]),
                layer=str(doc["layer"]),
                raw=arrays["raw"].astype(np.float32),
                maps=arrays["maps"].astype(np.float32),
                targets=tuple(int(t) for t in doc["targets"]),
                target_kind=str(doc["target_kind"]),
                logits=arrays["logits"].astype(np.float32),
                probs=arrays["probs"].astype(np.float32),
                constant=arrays["constant"].astype(bool),
                provenance={str(k): str(v) for k, v in doc.get("provenance", {}).items()},
            )
        except KeyError as exc:
            raise BundleError(f"{manifest} lacks the field {exc}") from exc


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
