"""The reference bundle: its record, its two files (``<stem>.npz`` arrays + ``<stem>.json`` manifest) and
reading them without trusting them.

Saved as ``<stem>.npz`` (arrays) + ``<stem>.json`` (manifest with ``schema_version``, the model's content
hash, architecture, method, layer, preprocessing, class names, bands, parameters, calibration, creation
time); :func:`load_bundle` reads the files, :func:`load_bundle_bytes` the bytes of an upload (no file
written, nothing unpickled: the zip and every ``.npy`` header are checked before anything is allocated).
Schema-1 bundles still load; they say they lack the calibration, and the lines that need it are not
assessable.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from verification.errors import BundleError
from verification.io.budget import MiB
from verification.io.files import read_npz, read_regular_file
from verification.io.records import LoadedModel
from verification.metrics import DEFAULT_METRICS, METRICS
from verification.metrics.functional import Threshold
from verification.verdict.calibration import Calibration

SCHEMA_NAME = "verification.reference.ReferenceBundle"
"""The manifest's ``"schema"``: a name in the file format, kept whatever module holds the class."""
SCHEMA_VERSION = 2
READS_VERSIONS = (1, 2)
_ARRAYS = ("references", "counts", "maps", "calib_labels", "calib_values", "bands_lo", "bands_hi")
_OPTIONAL_ARRAYS = ("thumbnails", "thumb_labels")


@dataclass(frozen=True)
class VerdictParams:
    """The parameters of a bundle's leave-one-out bands, stored in its manifest (``"params"``).

    ``similarity_percentile`` / ``distance_percentile``: band edges of the leave-one-out spread;
    ``min_class_count``: classes with fewer calibration images use bands pooled over classes.
    ``min_flags`` / ``max_flagged_share`` / ``nan_flags`` are the first release's flag-share rule: no verdict
    reads them any more; they stay so that every schema-2 manifest reads back and is written unchanged.
    """

    similarity_percentile: float = 5.0
    distance_percentile: float = 95.0
    min_flags: int = 4
    max_flagged_share: float = 0.20
    nan_flags: bool = True
    min_class_count: int = 5


@dataclass(frozen=True)
class ReferenceBundle:
    """Per-class reference maps with their calibration bands.

    ``references`` (K, h, w) float32 in [0, 1] on the comparison grid (zeros where ``counts`` is 0);
    ``maps`` (M, h, w) the per-image maps behind them, ``calib_labels`` (M,) their class indices and
    ``calib_values`` (M, n_metrics) their leave-one-out metric values; ``bands_lo`` / ``bands_hi``
    (K, n_metrics) the in-distribution band per class and metric (−inf / +inf on the side a metric is not
    flagged); ``band_source[k]`` is "class" or "pooled". ``warnings`` lists mismatches found by
    :func:`load_bundle`.
    """

    class_names: tuple[str, ...]
    references: np.ndarray
    counts: np.ndarray
    maps: np.ndarray
    calib_labels: np.ndarray
    calib_values: np.ndarray
    bands_lo: np.ndarray
    bands_hi: np.ndarray
    band_source: tuple[str, ...]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    threshold: Threshold = 0.5
    params: VerdictParams = field(default_factory=VerdictParams)
    source: str = "maps"
    method: str | None = None
    layer: str | None = None
    model_hash: str | None = None
    architecture: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    warnings: tuple[str, ...] = ()
    calibration: Calibration | None = None
    thumbnails: np.ndarray | None = None
    thumb_labels: np.ndarray | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def grid(self) -> tuple[int, int]:
        return (int(self.references.shape[1]), int(self.references.shape[2]))

    def band(self, class_name: str) -> dict[str, tuple[float, float]]:
        """``{metric: (lo, hi)}`` of one class."""
        k = self.class_names.index(class_name)
        return {
            m: (float(self.bands_lo[k, j]), float(self.bands_hi[k, j])) for j, m in enumerate(self.metrics)
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<stem>.npz`` and ``<stem>.json``; returns the ``.npz`` path."""
        npz, manifest = _paths(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        for name in _OPTIONAL_ARRAYS:
            if getattr(self, name) is not None:
                arrays[name] = np.asarray(getattr(self, name))
        np.savez_compressed(npz, **arrays)
        doc = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "arrays": npz.name,
            "class_names": list(self.class_names),
            "metrics": list(self.metrics),
            "threshold": self.threshold,
            "params": asdict(self.params),
            "source": self.source,
            "method": self.method,
            "layer": self.layer,
            "model_hash": self.model_hash,
            "architecture": self.architecture,
            "preprocessing": self.preprocessing,
            "grid": list(self.grid),
            "counts": [int(c) for c in self.counts],
            "bands": {
                name: self.band(name) | {"source": self.band_source[k]}
                for k, name in enumerate(self.class_names)
            },
            "created": self.created,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "reference_images": 0 if self.thumbnails is None else len(self.thumbnails),
        }
        manifest.write_text(json.dumps(doc, indent=2, default=_json_default))
        return npz

    def with_calibration(
        self, calibration: Calibration | None, thumbnails: np.ndarray | None = None,
        thumb_labels: np.ndarray | None = None,
    ) -> ReferenceBundle:  # fmt: skip
        """The bundle with the verdict's calibration (and the E0 gate's reference thumbnails) attached."""
        return replace(
            self, calibration=calibration,
            thumbnails=self.thumbnails if thumbnails is None else np.asarray(thumbnails, np.uint8),
            thumb_labels=self.thumb_labels if thumb_labels is None else np.asarray(thumb_labels, np.int64),
            schema_version=SCHEMA_VERSION,
        )  # fmt: skip


def _json_default(o: object) -> object:
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def preprocessing_of(model: LoadedModel) -> dict[str, Any]:
    """What a bundle records about the model's input pipeline."""
    return {
        "input_size": [int(v) for v in model.input_size],
        "mean": [float(v) for v in model.mean],
        "std": [float(v) for v in model.std],
        "channels": int(model.in_channels),
    }


# ------------------------------------------------------------------------------------------------- loading
def load_bundle(
    path: str | Path,
    *,
    model: LoadedModel | None = None,
    method: str | None = None,
    layer: str | None = None,
) -> ReferenceBundle:
    """Read a bundle written by :meth:`ReferenceBundle.save`. When ``model`` / ``method`` / ``layer`` are
    given and differ from the bundle's, each difference is reported with ``warnings.warn`` and listed in the
    returned bundle's ``warnings``; a missing file or another schema raises BundleError."""
    npz, manifest = _paths(path)
    if not manifest.is_file() or not npz.is_file():
        raise BundleError(f"a reference bundle needs both {npz.name} and {manifest.name} in {npz.parent}")
    # both files bounded before they are read (the .npz: its arrays + 1 MiB of zip and .npy headers)
    text = read_regular_file(
        manifest, kind="bundle manifest", max_bytes=MAX_MANIFEST_BYTES, error=BundleError
    )
    data = read_regular_file(
        npz, kind="bundle arrays file", max_bytes=MAX_BUNDLE_BYTES + MiB, error=BundleError
    )
    return load_bundle_bytes(
        data, text, model=model, method=method, layer=layer, name=str(npz), manifest_name=str(manifest)
    )


def load_bundle_bytes(
    arrays_npz: bytes,
    manifest_json: str | bytes,
    *,
    model: LoadedModel | None = None,
    method: str | None = None,
    layer: str | None = None,
    name: str = "uploaded bundle",
    manifest_name: str | None = None,
) -> ReferenceBundle:
    """A bundle from the bytes of its two files (an upload): no file is written, nothing is unpickled."""

    manifest = manifest_name or f"{name} manifest"
    npz = name
    doc = _read_manifest(manifest_json, manifest)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise BundleError(f"{manifest} is not a reference bundle manifest")
    version = doc.get("schema_version")
    if version not in READS_VERSIONS:
        raise BundleError(
            f"{manifest} has schema_version {version!r}; this version reads "
            f"{', '.join(map(str, READS_VERSIONS))}. Rebuild the bundle with this version."
        )
    members = read_npz(
        arrays_npz,
        f"reference bundle {npz}",
        max_bytes=MAX_BUNDLE_BYTES,
        error=BundleError,
        max_entries=64,
        names={*_ARRAYS, *_OPTIONAL_ARRAYS},
    )
    try:
        arrays: dict[str, Any] = {name: members[name] for name in _ARRAYS}
        for name_ in _OPTIONAL_ARRAYS:
            if name_ in members:
                arrays[name_] = members[name_]
        cal_doc = doc.get("calibration")
        bundle = ReferenceBundle(
            class_names=tuple(doc["class_names"]),
            band_source=tuple(doc["bands"][c]["source"] for c in doc["class_names"]),
            metrics=tuple(doc["metrics"]),
            threshold=doc["threshold"],
            params=VerdictParams(**doc["params"]),
            source=str(doc["source"]),
            method=doc.get("method"),
            layer=doc.get("layer"),
            model_hash=doc.get("model_hash"),
            architecture=doc.get("architecture"),
            preprocessing=dict(doc.get("preprocessing") or {}),
            created=str(doc.get("created", "")),
            calibration=Calibration.from_dict(cal_doc) if isinstance(cal_doc, dict) else None,
            schema_version=int(version),
            **arrays,
        )
    except (OSError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise BundleError(f"reference bundle {npz} is missing data or is corrupt: {str(exc)[:200]}") from exc
    _check_arrays(bundle, npz)
    unknown = [m for m in bundle.metrics if m not in METRICS]
    if unknown:
        raise BundleError(f"bundle {npz} uses metrics this version does not know: {unknown}")
    found = _mismatches(bundle, model, method, layer)
    if bundle.calibration is None:
        found.append(
            "the bundle carries no verdict calibration (built before schema 2, or without healthy models): "
            "lines that need calibrated thresholds (E3, E4, E5, E6) are not assessable"
        )
    for msg in found:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return replace(bundle, warnings=tuple(found))


MAX_MANIFEST_BYTES = 8 << 20


def _read_manifest(text: str | bytes, what: str) -> Any:
    """The manifest's JSON, bounded: at most ``MAX_MANIFEST_BYTES``, numbers of at most 40 characters, no NaN
    (±Infinity is how open band edges are written); any failure, deep nesting included, is a BundleError."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{what} is {len(text):,} bytes; a bundle manifest is at most {MAX_MANIFEST_BYTES:,}"
        )

    def number(kind: type) -> Any:
        def parse(token: str) -> Any:
            if len(token) > 40:
                raise ValueError(f"a number of {len(token)} characters")
            return kind(token)

        return parse

    def constant(token: str) -> float:
        if token == "NaN":
            raise ValueError("NaN")
        return float(token)

    try:
        raw = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(raw, parse_int=number(int), parse_float=number(float), parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{what} is not a readable JSON manifest: {str(exc)[:160]}") from exc


MAX_BUNDLE_BYTES = 512 << 20


def _check_arrays(bundle: ReferenceBundle, what: str) -> None:
    """Shapes and values a bundle must have for its numbers to mean anything."""
    k = len(bundle.class_names)
    refs = np.asarray(bundle.references)
    problems = []
    if refs.ndim != 3 or refs.shape[0] != k:
        problems.append(f"references have shape {refs.shape}, expected ({k}, h, w) for {k} classes")
    elif not np.isfinite(refs).all():
        problems.append("references contain NaN or infinite values")
    if np.asarray(bundle.counts).shape != (k,):
        problems.append(f"counts have shape {np.asarray(bundle.counts).shape}, expected ({k},)")
    thr = bundle.threshold
    if not (
        thr == "otsu" or (isinstance(thr, int | float) and np.isfinite(thr) and 0.0 <= float(thr) <= 1.0)
    ):
        problems.append(f"threshold {thr!r} is neither 'otsu' nor a number in [0, 1]")
    if bundle.thumbnails is not None and (bundle.thumbnails.ndim != 3 or bundle.thumbnails.dtype != np.uint8):
        problems.append("reference thumbnails must be (N, s, s) uint8")
    if problems:
        raise BundleError(f"reference bundle {what} is corrupt: {'; '.join(problems)}")


def _mismatches(
    bundle: ReferenceBundle, model: LoadedModel | None, method: str | None, layer: str | None
) -> list[str]:
    out = []
    if model is not None:
        if bundle.model_hash and model.content_hash != bundle.model_hash:
            out.append(
                f"the model '{model.name}' (hash {model.content_hash[:12]}) is not the model this reference "
                f"bundle was built with (hash {bundle.model_hash[:12]}): its maps are compared with another "
                "model's references"
            )
        if bundle.architecture and model.architecture and model.architecture != bundle.architecture:
            out.append(f"architecture differs: bundle {bundle.architecture}, model {model.architecture}")
        if bundle.preprocessing and preprocessing_of(model) != bundle.preprocessing:
            out.append(
                f"preprocessing differs: bundle {bundle.preprocessing}, model {preprocessing_of(model)}; "
                "the bands may not apply"
            )
        if list(model.class_names) != list(bundle.class_names):
            out.append(
                f"class names differ: bundle {list(bundle.class_names)}, model {list(model.class_names)}"
            )
    if method is not None and bundle.method is not None and method != bundle.method:
        out.append(f"method differs: bundle {bundle.method}, requested {method}; bands were calibrated on it")
    if layer is not None and bundle.layer is not None and layer != bundle.layer:
        out.append(f"layer differs: bundle {bundle.layer}, requested {layer}")
    return out
