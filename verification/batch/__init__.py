"""Batching for dataset-scale work: image sources, a Dataset over image paths, batch jobs, row encoding.

Images are decoded inside DataLoader workers and resized to the model's input size, so a batch may mix source
sizes freely; a file that cannot be read becomes an error row carrying the loader's message and never stops
the run. A *job* (``CamJob``, ``VerifyJob``) loads its model once (``setup``) and then turns batches into
rows, one per image; the engines in :mod:`verification.engines` drive jobs locally or on Ray with the same
job code, so both engines give the same numbers.

One concern per module; every public name is re-exported here (``from verification.batch import X``):

* :mod:`~verification.batch.sources` — files, folders, DICOMweb addresses and labelled sources → image paths
  (:func:`scan_images`, :func:`scan_labelled`);
* :mod:`~verification.batch.dataset` — the Dataset over image paths, the collate, the DataLoader, and the
  per-file error rows (:func:`guarded`, :func:`read_images`);
* :mod:`~verification.batch.jobs` — the jobs (:class:`BatchJob`, :class:`CamJob` and its :class:`ImageCams`,
  :class:`VerifyJob`, :func:`merge_verify_rows`), the model spec a worker loads, per-image error isolation;
* :mod:`~verification.batch.rows` — the frozen :class:`Row` record (one image's result or error) and its npz
  encoding across process boundaries (Ray);
* :mod:`~verification.batch.camfiles` — the per-image ``.npz`` CAM file written by ``cam``.
"""

from __future__ import annotations

from verification.batch.camfiles import CAM_FILE_SCHEMA, load_image_cams, save_image_cams
from verification.batch.dataset import (
    MAX_MESSAGE,
    Batch,
    ImageDataset,
    ImageItem,
    collate_items,
    error_message,
    guarded,
    make_loader,
    preprocessing_view,
    read_images,
)
from verification.batch.jobs import (
    LESION_SUFFIXES,
    PER_IMAGE_ERRORS,
    BatchJob,
    CamJob,
    ImageCams,
    ModelSpec,
    VerifyJob,
    folder_mask,
    merge_verify_rows,
    per_sample_on_error,
    resolve_target,
)
from verification.batch.rows import Failure, Row, decode_row, encode_row
from verification.batch.sources import IMAGE_SUFFIXES, scan_images, scan_labelled

__all__ = [
    "CAM_FILE_SCHEMA",
    "IMAGE_SUFFIXES",
    "LESION_SUFFIXES",
    "MAX_MESSAGE",
    "PER_IMAGE_ERRORS",
    "Batch",
    "BatchJob",
    "CamJob",
    "Failure",
    "ImageCams",
    "ImageDataset",
    "ImageItem",
    "ModelSpec",
    "Row",
    "VerifyJob",
    "collate_items",
    "decode_row",
    "encode_row",
    "error_message",
    "folder_mask",
    "guarded",
    "load_image_cams",
    "make_loader",
    "merge_verify_rows",
    "per_sample_on_error",
    "preprocessing_view",
    "read_images",
    "resolve_target",
    "save_image_cams",
    "scan_images",
    "scan_labelled",
]
