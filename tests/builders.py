"""Byte builders the tests share: zip archives and small DICOM files, written in memory.

numpy and pydicom are imported where they are used: the fuzz corpus imports this module in the parent of the
children whose memory it measures."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset


def zip_bytes(
    entries: Mapping[str, bytes] | Iterable[tuple[str, bytes]], *, compresslevel: int | None = None
) -> bytes:
    """A deflated zip of ``entries`` (name → bytes, or pairs: a name may repeat), in the given order."""
    pairs = entries.items() if isinstance(entries, Mapping) else entries
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
        for name, data in pairs:
            zf.writestr(name, data)
    return buf.getvalue()


def dicom_dataset(
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    *,
    sop_class: str | None = None,
    **tags: Any,
) -> Dataset:
    """A CR dataset of SOP class ``sop_class`` (default: secondary capture) holding ``arr`` (``(H, W)`` or
    ``(frames, H, W)``) with ``bits`` stored bits, then the attributes ``tags`` set (in order, after the pixel
    data)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    sop = UID(sop_class) if sop_class else SecondaryCaptureImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.set_pixel_data(arr, photometric, bits)
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` as a DICOM file (preamble, file meta)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_bytes(arr: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **tags: Any) -> bytes:
    """:func:`dicom_dataset` as a file."""
    return dataset_bytes(dicom_dataset(arr, photometric, bits, **tags))


def loaded_model(
    module: Any,
    *,
    in_channels: int = 1,
    input_size: tuple[int, int] = (16, 16),
    class_names: tuple[str, ...] = ("normal", "nodule"),
    mean: tuple[float, ...] = (0.0,),
    std: tuple[float, ...] = (1.0,),
    name: str = "toy",
    **fields: Any,
) -> Any:
    """A ``LoadedModel`` around an in-memory module (source format "module", content hash = ``name``), eval
    mode; ``fields`` sets any other field (``architecture``, ``task``, ``garbage_class``, ...)."""
    from verification.io.records import LoadedModel

    fields.setdefault("source_format", "module")
    fields.setdefault("content_hash", name)
    return LoadedModel(
        module=module.eval(),
        in_channels=in_channels,
        input_size=input_size,
        class_names=class_names,
        mean=mean,
        std=std,
        name=name,
        **fields,
    )
