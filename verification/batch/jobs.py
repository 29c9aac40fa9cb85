"""Batching for dataset-scale work: a Dataset over image paths, a collate for mixed sizes, and batch jobs.

Images are decoded by :func:`verification.io.images.load_image` inside DataLoader workers and turned into
model input by :func:`verification.io.images.to_tensor`, which resizes every image to the model's input size,
so a batch may mix source sizes freely. A file that cannot be read becomes an error row carrying the loader's
message; it never stops the run. A *job* (``CamJob``, ``VerifyJob``) is what runs on each batch: it loads its
model once (``setup``) and then turns batches into rows, one per image. The engines in
:mod:`verification.engines` drive jobs locally through a DataLoader or on Ray with the same job code, so both
engines give the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from verification.errors import (
    BundleError,
    ModelForwardError,
    NonFiniteError,
    VerificationError,
)
from verification.io.records import LoadedImage, LoadedModel

if TYPE_CHECKING:
    from verification.verdict.records import VerificationReport

__all__ = [
    "IMAGE_SUFFIXES",
    "Batch",
    "BatchJob",
    "CamJob",
    "ImageDataset",
    "ImageItem",
    "ModelSpec",
    "Row",
    "collate_items",
    "decode_row",
    "encode_row",
    "make_loader",
    "scan_images",
    "scan_labelled",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"})

Row = dict[str, Any]
"""One image's result: ``index``, ``path``, ``error`` (None or the message) plus job-specific fields."""


def scan_images(sources: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of image files.

    Folders are searched recursively for files with an image suffix (``IMAGE_SUFFIXES``, case-insensitive);
    files named explicitly are kept whatever their suffix (DICOM files often have none). A DICOMweb address
    (``dicomweb+http(s)://host:port/root/studies/<uid>[/series/<uid>]``) is retrieved from the PACS into a
    private temporary folder (:func:`verification.pacs.materialize`: bounded, typed ``PacsError``s). Raises
    ``FileNotFoundError`` for a source that does not exist.
    """
    found: list[Path] = []
    for source in sources:
        if isinstance(source, str) and source.lower().startswith("dicomweb+"):
            from verification.pacs.sources import materialize

            found.extend(materialize(source))
            continue
        path = Path(source)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p, path)
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def scan_labelled(source: str | Path) -> tuple[list[Path], list[str]]:
    """Images and their class names from a labelled source.

    ``source`` is a folder with one subfolder per class (its name is the label; images anywhere below it), or
    a CSV file of ``path,label`` rows (an optional ``path,label`` header; relative paths are taken from the
    CSV's folder). Raises FileNotFoundError for a missing source or listed file, ValueError for a malformed
    CSV or a folder without class subfolders.
    """
    if isinstance(source, str) and source.lower().startswith("dicomweb+"):
        raise ValueError(
            "a DICOMweb source carries no class labels: give it without --labelled, or save its images into "
            "one folder per class"
        )
    source = Path(source)
    if source.is_dir():
        classes = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
        paths: list[Path] = []
        labels: list[str] = []
        for folder in classes:
            found = scan_images([folder])
            paths.extend(found)
            labels.extend([folder.name] * len(found))
        if not paths:
            raise ValueError(
                f"{source} has no class subfolders with images; expected <class>/<image> (e.g. "
                f"{source}/normal/001.png) or a CSV of path,label"
            )
        return paths, labels
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or folder")
    import csv

    paths, labels = [], []
    with source.open(newline="", encoding="utf-8-sig") as fh:
        for line, record in enumerate(csv.reader(fh), start=1):
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) < 2:
                raise ValueError(f"{source}:{line}: expected 'path,label', got {','.join(record)!r}")
            path_text, label = record[0].strip(), record[1].strip()
            if line == 1 and (path_text.lower(), label.lower()) == ("path", "label"):
                continue
            path = Path(path_text)
            path = path if path.is_absolute() else source.parent / path
            if not path.is_file():
                raise FileNotFoundError(f"{source}:{line}: image {path} does not exist")
            paths.append(path)
            labels.append(label)
    if not paths:
        raise ValueError(f"{source} lists no images; expected rows of path,label")
    return paths, labels


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model: what a worker needs to load its own copy (a path, not a module)."""

    path: str
    sidecar: str | None = None
    architecture: str | None = None
    trust: bool = False

    def load(self) -> LoadedModel:
        from verification.io.models import load_model

        return load_model(self.path, sidecar=self.sidecar, architecture=self.architecture, trust=self.trust)


@dataclass(frozen=True)
class ImageItem:
    """One decoded image ready for batching, or the reason it could not be decoded."""

    index: int
    path: str
    tensor: torch.Tensor | None  # (C, H, W) at the model's input size, normalised
    display: np.ndarray | None  # uint8 (H, W) or (H, W, 3), kept only when the job draws overlays
    error: str | None
    content_hash: str = ""
    notices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Batch:
    """A collated batch: ``x`` stacks the images that loaded; ``items`` keeps every image, errors included."""

    x: torch.Tensor  # (n_ok, C, H, W)
    items: tuple[ImageItem, ...]
    ok: tuple[int, ...] = field(default=())  # positions in ``items`` of the rows stacked in ``x``

    def __len__(self) -> int:
        return len(self.items)


def preprocessing_view(model: LoadedModel) -> LoadedModel:
    """The model record without its weights: all ``to_tensor`` needs, cheap to send to DataLoader workers."""
    return dataclasses.replace(model, module=nn.Identity())


class ImageDataset(Dataset[ImageItem]):
    """Image paths → ``ImageItem`` with per-file error capture.

    A file the loader rejects (corrupt, not an image, too large: any typed error, OSError, MemoryError)
    becomes an item with ``error`` set and no tensor. So does any other exception, which is a loader bug on
    that file: it is logged with its traceback and its row says "unexpected error", but one hostile file
    never stops the batch.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        model: LoadedModel,
        *,
        keep_display: bool = False,
        first_index: int = 0,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.model = preprocessing_view(model)
        self.keep_display = keep_display
        self.first_index = first_index

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> ImageItem:
        from verification.io.images import load_image, to_tensor

        path = self.paths[i]
        index = self.first_index + i

        def load() -> tuple[LoadedImage, torch.Tensor]:
            image = load_image(path)
            return image, to_tensor(image, self.model)[0]

        loaded, error = guarded(load, path)
        if loaded is None:
            return ImageItem(index=index, path=path, tensor=None, display=None, error=error)
        image, tensor = loaded
        return ImageItem(
            index=index,
            path=path,
            tensor=tensor,
            display=image.display if self.keep_display else None,
            error=None,
            content_hash=image.content_hash,
            notices=tuple(image.notices),
        )


MAX_MESSAGE = 300  # characters of an error row's message (a hostile file may raise a huge one)
T = TypeVar("T")


def guarded(read: Callable[[], T], path: str | Path) -> tuple[T | None, str | None]:
    """``(read(), None)``, or ``(None, message)`` — the error row of one file that cannot be read: any typed
    error, OSError or MemoryError gives its message; any other exception is a reader bug on that file, logged
    with its traceback and reported as "unexpected error". Every batch command reads files through this."""
    try:
        return read(), None
    except (VerificationError, OSError, MemoryError) as exc:
        return None, _message(exc)
    except Exception as exc:  # a loader bug on one hostile file: an error row, not an aborted run
        logging.getLogger("verification.batch").warning("unexpected error reading %s", path, exc_info=True)
        return None, _message(exc, "unexpected error reading this file ({})")


def read_images(paths: Sequence[str | Path]) -> tuple[list[LoadedImage], list[int], list[Row]]:
    """Load every image: the ones that loaded, their positions in ``paths``, and an error row
    (``index``, ``path``, ``error``) for each one that did not."""
    from verification.io.images import load_image

    images: list[LoadedImage] = []
    kept: list[int] = []
    errors: list[Row] = []
    for i, path in enumerate(paths):
        image, error = guarded(functools.partial(load_image, path), path)
        if image is None:
            errors.append({"index": i, "path": str(path), "error": error})
        else:
            images.append(image)
            kept.append(i)
    return images, kept, errors


def _message(exc: BaseException, template: str = "{}") -> str:
    text = str(exc)[: MAX_MESSAGE + 1] or type(exc).__name__
    text = template.format(text if isinstance(exc, VerificationError) else f"{type(exc).__name__}: {text}")
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 2] + "…" + template[-1:].strip("}")


def collate_items(items: Sequence[ImageItem]) -> Batch:
    """Stack the loaded images of a batch (all at the model input size) and keep the failed ones as rows."""
    ok = tuple(i for i, item in enumerate(items) if item.tensor is not None)
    tensors = [items[i].tensor for i in ok]
    if tensors:
        x = torch.stack([t for t in tensors if t is not None])
    else:
        x = torch.empty(0)
    return Batch(x=x, items=tuple(items), ok=ok)


def make_loader(
    paths: Sequence[str | Path],
    model: LoadedModel,
    *,
    batch_size: int = 16,
    workers: int = 0,
    keep_display: bool = False,
) -> DataLoader[ImageItem]:
    """A DataLoader yielding ``Batch`` objects in path order (decoding runs in ``workers`` processes)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    dataset = ImageDataset(paths, model, keep_display=keep_display)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_items,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


class BatchJob:
    """Work done on each batch. ``setup`` loads what the job needs once per process (a model, a bundle);
    ``run`` turns a batch into one row per image, error rows included, in batch order."""

    keep_display: bool = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._model: LoadedModel | None = None

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            raise RuntimeError("BatchJob.setup() must run before the job is used")
        return self._model

    def setup(self, model: LoadedModel | None = None) -> LoadedModel:
        """Load the model (or adopt an already loaded one); idempotent."""
        if self._model is None:
            self._model = model if model is not None else self.spec.load()
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        # Jobs travel to Ray workers as their spec; each worker loads its own model in setup().
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def run(self, batch: Batch) -> list[Row]:
        rows: list[Row] = [_base_row(item) for item in batch.items]
        if batch.ok:
            for pos, row in zip(batch.ok, self.process(batch)):
                rows[pos].update(row)
        return rows

    def process(self, batch: Batch) -> list[Row]:
        """Rows for the images in ``batch.x`` (one per entry of ``batch.ok``)."""
        raise NotImplementedError


def _base_row(item: ImageItem) -> Row:
    return {"index": item.index, "path": item.path, "error": item.error, "content_hash": item.content_hash}


def resolve_target(target: str | None, model: LoadedModel) -> int | None:
    """``None`` (predicted class), a class index, or a class name → index; raises ValueError otherwise."""
    if target is None or target == "":
        return None
    if target in model.class_names:
        return model.class_names.index(target)
    try:
        index = int(target)
    except ValueError:
        raise ValueError(
            f"target {target!r} is neither a class index nor one of the class names {list(model.class_names)}"
        ) from None
    if not 0 <= index < model.num_classes:
        raise ValueError(f"target index {index} is outside 0..{model.num_classes - 1}")
    return index


class CamJob(BatchJob):
    """Attention maps for every requested (method, layer) from one forward and one backward per batch.

    Row fields: ``pred`` (int), ``probs`` (K,), ``logits`` (K,), ``target`` (int), and for each result key
    ``"<method>@<layer>"``: ``maps[key]`` (H, W) in [0, 1] at input size, ``raw[key]`` (h, w) at the layer's
    resolution, ``constant[key]`` (bool); ``provenance`` maps each key to its CamResult provenance.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        methods: Sequence[str] = ("gradcam",),
        layers: Sequence[str] | None = None,
        target: str | None = None,
        keep_display: bool = False,
    ) -> None:
        super().__init__(spec)
        self.methods = tuple(methods)
        self.layers = tuple(layers) if layers else None
        self.target = target
        self.keep_display = keep_display

    def process(self, batch: Batch) -> list[Row]:
        return per_sample_on_error(self._cams, batch)

    def _cams(self, batch: Batch, x: torch.Tensor, ok: Sequence[int]) -> list[Row]:
        from verification.cam import compute_cams

        model = self.model
        results = compute_cams(
            model,
            x,
            methods=self.methods,
            layers=self.layers,
            target=resolve_target(self.target, model),
        )
        first = results[0]
        rows: list[Row] = []
        for n, pos in enumerate(ok):
            item = batch.items[pos]
            row: Row = {
                "pred": int(np.argmax(first.logits[n])),
                "logits": np.asarray(first.logits[n], dtype=np.float32),
                "probs": np.asarray(first.probs[n], dtype=np.float32),
                "target": int(first.targets[n]),
                "maps": {},
                "raw": {},
                "constant": {},
                "provenance": {},
            }
            for res in results:
                key = f"{res.method}@{res.layer}"
                row["maps"][key] = np.asarray(res.maps[n], dtype=np.float32)
                row["raw"][key] = np.asarray(res.raw[n], dtype=np.float32)
                row["constant"][key] = bool(res.constant[n])
                row["provenance"][key] = dict(res.provenance)
            if item.display is not None:
                row["display"] = item.display
            rows.append(row)
        if getattr(model, "task", None) == "multilabel" and self.target is None:
            self._label_maps(model, x, rows)
        return rows

    def _label_maps(self, model: LoadedModel, x: torch.Tensor, rows: list[Row]) -> None:
        """A multi-label model without ``--target``: also one map per label the model calls present (σ ≥ 0.5,
        else its top label), as ``row["label_maps"][label][key]``."""
        from verification.multilabel import label_cams

        lm = label_cams(model, x, methods=self.methods, layers=self.layers)
        for r, (n, k) in enumerate(zip(lm.images, lm.labels)):
            per = rows[n].setdefault("label_maps", {}).setdefault(model.class_names[k], {})
            for res in lm.results:
                per[f"{res.method}@{res.layer}"] = np.asarray(res.maps[r], dtype=np.float32)


# Errors that one image of a batch can cause on its own (NaN/inf in its tensor, a model that fails on it);
# configuration errors (an unknown layer, a bad target) fail every image alike and stop the run instead.
PER_IMAGE_ERRORS: tuple[type[Exception], ...] = (NonFiniteError, ModelForwardError)


def per_sample_on_error(
    compute: Callable[[Batch, torch.Tensor, Sequence[int]], list[Row]], batch: Batch
) -> list[Row]:
    """Rows for ``batch.x`` from ``compute(batch, x, ok_positions)``; when the whole batch fails with a
    per-image error, each image is run alone and the ones that fail become error rows (``{"error": ...}``),
    so one hostile image does not take its batch-mates down with it."""
    try:
        return compute(batch, batch.x, batch.ok)
    except PER_IMAGE_ERRORS as exc:
        if len(batch.ok) == 1:
            return [{"error": _message(exc)}]
    rows: list[Row] = []
    for n, pos in enumerate(batch.ok):
        try:
            rows.extend(compute(batch, batch.x[n : n + 1], [pos]))
        except PER_IMAGE_ERRORS as exc:
            rows.append({"error": _message(exc)})
    return rows


# Rows cross process boundaries (Ray) as npz bytes: arrays, numbers and strings only, no pickle either way.


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


# Per-image CAM files written by ``python -m verification cam``.

CAM_FILE_SCHEMA = "verification.batch.image_cams"


def save_image_cams(path: str | Path, row: Row, *, class_names: Sequence[str]) -> Path:
    """Write one image's maps as ``.npz``: ``map/<method>@<layer>`` (H, W) in [0, 1], ``raw/<key>`` (h, w),
    ``logits`` (K,), ``probs`` (K,), and ``meta`` (a JSON string: schema, source path, target, predicted
    class, class names, constant flags, provenance). Readable with ``np.load(path, allow_pickle=False)``.
    A multi-label model's row adds ``label_map/<i>/<key>`` for each label ``meta["labels"][i]``."""
    arrays: dict[str, np.ndarray] = {"logits": row["logits"], "probs": row["probs"]}
    for key in row["maps"]:
        arrays[f"map/{key}"] = row["maps"][key]
        arrays[f"raw/{key}"] = row["raw"][key]
    labels = list(row.get("label_maps", {}))  # a multi-label model: one map per label it calls present
    for i, label in enumerate(labels):
        for key, m in row["label_maps"][label].items():
            arrays[f"label_map/{i}/{key}"] = m
    meta = {
        "schema": CAM_FILE_SCHEMA,
        "schema_version": 1,
        "source": str(row["path"]),
        "content_hash": row.get("content_hash", ""),
        "pred": int(row["pred"]),
        "target": int(row["target"]),
        "class_names": list(class_names),
        "constant": {k: bool(v) for k, v in row["constant"].items()},
        "provenance": row.get("provenance", {}),
        **({"labels": labels} if labels else {}),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return Path(path)


def load_image_cams(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_image_cams`: ``(maps, raw, meta)``; meta also holds logits/probs."""
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    meta: dict[str, Any] = json.loads(str(data.pop("meta")))
    if meta.get("schema") != CAM_FILE_SCHEMA:
        raise BundleError(f"{path} is not a per-image CAM file (schema {meta.get('schema')!r})")
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


LESION_SUFFIXES = ("_lesion", "_finding", "_annotation")
"""File names :class:`VerifyJob` looks for in an annotation folder: ``<image stem><suffix>.png`` (or .npy)."""


class VerifyJob(BatchJob):
    """The verdict's measurements, batch by batch (:func:`verification.verdict.measure.measure_batch`).

    The rules of :func:`verification.verify` — one path: the bundle's method, the bundle's layer when the
    model
    has it (else the default target layer, with a warning), the E0 gate from the bundle's reference images,
    the
    anatomy from ``anatomy_dir`` masks or the automatic method, findings from ``annotation_dir`` masks
    (``<stem>_lesion.png``). Rows are :meth:`Measurements.rows` (numbers, strings and arrays, so they cross
    the
    Ray engine's process boundary); :func:`merge_verify_rows` turns them back into the frozen
    :class:`~verification.verdict.measure.Measurements` and the :class:`VerificationReport`.
    """

    def __init__(
        self,
        spec: ModelSpec,
        bundle_path: str,
        *,
        labels: Sequence[str] | None = None,
        annotation_dir: str | None = None,
        anatomy_dir: str | None = None,
        gate: ModelSpec | None = None,
        config: Any = None,
    ) -> None:
        super().__init__(spec)
        self.bundle_path = bundle_path
        self.labels = tuple(labels) if labels is not None else None
        self.annotation_dir = annotation_dir
        self.anatomy_dir = anatomy_dir
        self.gate_spec = gate
        self.config = config
        self._bundle: Any = None
        self._measure: Any = None
        self.warnings: tuple[str, ...] = ()
        self.mismatch: str | None = None

    def setup(self, model: LoadedModel | None = None) -> LoadedModel:
        loaded = super().setup(model)
        if self._bundle is None:
            import warnings

            from verification.reference import load_bundle
            from verification.verdict import VerdictConfig
            from verification.verdict.api import class_mismatch, measure_spec

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the mismatches are kept in bundle.warnings and reported
                bundle = load_bundle(self.bundle_path, model=loaded)
            self.config = self.config or VerdictConfig()
            self.mismatch = class_mismatch(loaded, bundle)
            found = list(bundle.warnings)
            if self.mismatch is None:
                gate = self.gate_spec.load() if self.gate_spec is not None else None
                self._measure, more = measure_spec(loaded, bundle, self.config, gate)
                found += more
            self._bundle, self.warnings = bundle, tuple(dict.fromkeys(found))
        return loaded

    @property
    def bundle(self) -> Any:
        if self._bundle is None:
            raise RuntimeError("VerifyJob.setup() must run before the job is used")
        return self._bundle

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_bundle"] = None
        state["_measure"] = None
        return state

    def _mask(self, folder: str | None, path: str, suffixes: Sequence[str]) -> np.ndarray | None:
        if folder is None:
            return None
        from verification.anatomy import _read_mask_file, find_mask_file

        found = find_mask_file(folder, Path(path).name, suffixes)
        return None if found is None else np.asarray(_read_mask_file(found), dtype=np.float32)

    def process(self, batch: Batch) -> list[Row]:
        """Measurement rows; an image whose forward fails (NaN, model error) alone becomes an error row."""
        if self.mismatch is not None:
            raise BundleError(self.mismatch)
        return per_sample_on_error(self._measure_rows, batch)

    def _measure_rows(self, batch: Batch, x: torch.Tensor, positions: Sequence[int]) -> list[Row]:
        from verification.anatomy import MASK_SUFFIXES
        from verification.verdict.api import label_indices
        from verification.verdict.measure import measure_batch

        items = [batch.items[pos] for pos in positions]
        labels = [self.labels[it.index] for it in items] if self.labels is not None else None
        m = measure_batch(
            self.model, self._measure, x, names=[it.path for it in items],
            labels=label_indices(labels, self.bundle.class_names, len(items)),
            lesions=[self._mask(self.annotation_dir, it.path, LESION_SUFFIXES) for it in items],
            anatomy=[self._mask(self.anatomy_dir, it.path, MASK_SUFFIXES) for it in items],
        )  # fmt: skip
        return m.rows()


def merge_verify_rows(rows: Sequence[Row], job: VerifyJob) -> VerificationReport:
    """The :class:`~verification.verdict.VerificationReport` of a run: readable images measured, unreadable
    ones listed as errors (never counted as evidence)."""
    from verification.verdict.api import assemble, cannot_verify
    from verification.verdict.measure import Measurements

    bundle, model = job.bundle, job.model
    errors = [(str(r["path"]), str(r["error"])) for r in rows if r["error"]]
    if job.mismatch is not None:
        return cannot_verify(model, bundle, job.config, job.mismatch, len(rows), job.warnings, errors)
    ok = [r for r in rows if not r["error"]]
    if not ok:
        return cannot_verify(model, bundle, job.config, "none of the images could be read", len(rows),
                             job.warnings, errors)  # fmt: skip
    m = Measurements.from_rows(ok, bundle.class_names, model.class_names, bundle.grid)
    m = dataclasses.replace(m, names=tuple(str(r["path"]) for r in ok))
    return assemble(m, model, bundle, job.config, warnings=job.warnings, errors=errors)
