"""PACS access over DICOMweb: search (QIDO-RS), retrieve into the image loaders (WADO-RS), store heatmaps back
(STOW-RS). See :mod:`verification.pacs.client` for addresses, credentials and limits, :mod:`.writeback` for
what is stored, :mod:`.orthanc` for a local test PACS."""

from verification.pacs.client import (
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USER,
    InstanceRef,
    PacsClient,
    PacsConfig,
    PacsLimits,
    PacsSource,
    Retrieved,
    SeriesInfo,
    StudyInfo,
    is_dicomweb,
    parse_source,
)
from verification.pacs.sources import materialize, origin
from verification.pacs.writeback import HeatmapResult, build_overlay, store_overlays

__all__ = [
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_USER",
    "HeatmapResult",
    "InstanceRef",
    "PacsClient",
    "PacsConfig",
    "PacsLimits",
    "PacsSource",
    "Retrieved",
    "SeriesInfo",
    "StudyInfo",
    "build_overlay",
    "is_dicomweb",
    "materialize",
    "origin",
    "parse_source",
    "store_overlays",
]
