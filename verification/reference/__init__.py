"""Reference bundles: per-class reference maps, the comparison grid, and the verdict's calibration they carry.

A :class:`ReferenceBundle` holds one reference map per class — the mean normalised CAM over the correctly
classified images of a trusted reference set (or the mean annotation mask, or another model's maps) — together
with the per-image maps it came from and their leave-one-out metric values. Since schema 2 it also carries the
verdict's :class:`~verification.verdict.calibration.Calibration` (thresholds from healthy variation with their
power against known-bad references, METHODS.md §3) and small uint8 thumbnails of the reference images, from
which the input gate (E0) compares the early feature maps of the model under test.

The per-image leave-one-out values and bands (``calib_values``, ``bands_lo`` / ``bands_hi``,
:class:`VerdictParams`) are part of the schema-2 file format and are written and read with the bundle; no
verdict reads them. **The verdict is** :func:`verification.verify` (:mod:`verification.verdict`), from the
bundle's references and its calibration.

One concern per module: :mod:`~verification.reference.bundle` (the record, its files, reading them without
trusting them), :mod:`~verification.reference.build` (building bundles, the comparison grid, the bands),
:mod:`~verification.reference.masks` (annotation masks and boxes).
"""

from verification.reference.build import (
    build_reference,
    build_reference_from_paths,
    compute_bands,
    default_grid,
    reference_from_annotations,
    reference_from_maps,
    reference_from_model_maps,
    to_grid,
)
from verification.reference.bundle import (
    MAX_BUNDLE_BYTES,
    MAX_MANIFEST_BYTES,
    READS_VERSIONS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    ReferenceBundle,
    VerdictParams,
    load_bundle,
    load_bundle_bytes,
    preprocessing_of,
)
from verification.reference.masks import boxes_to_masks, load_boxes_json, load_mask

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_MANIFEST_BYTES",
    "READS_VERSIONS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "ReferenceBundle",
    "VerdictParams",
    "boxes_to_masks",
    "build_reference",
    "build_reference_from_paths",
    "compute_bands",
    "default_grid",
    "load_boxes_json",
    "load_bundle",
    "load_bundle_bytes",
    "load_mask",
    "preprocessing_of",
    "reference_from_annotations",
    "reference_from_maps",
    "reference_from_model_maps",
    "to_grid",
]
