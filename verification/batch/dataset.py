"""A Dataset over image paths and a collate for mixed sizes, with per-file error capture.

Images are decoded by :func:`verification.io.images.load_image` inside DataLoader workers and turned into
model input by :func:`verification.io.images.to_tensor`, which resizes every image to the model's input size,
so a batch may mix source sizes freely. A file that cannot be read becomes an error row carrying the loader's
message (:func:`guarded`); it never stops the run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from verification.batch.rows import Row
from verification.errors import VerificationError
from verification.io.records import LoadedImage, LoadedModel

__all__ = [
    "MAX_MESSAGE",
    "Batch",
    "ImageDataset",
    "ImageItem",
    "collate_items",
    "error_message",
    "guarded",
    "make_loader",
    "preprocessing_view",
    "read_images",
]


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
        return None, error_message(exc)
    except Exception as exc:  # a loader bug on one hostile file: an error row, not an aborted run
        logging.getLogger("verification.batch").warning("unexpected error reading %s", path, exc_info=True)
        return None, error_message(exc, "unexpected error reading this file ({})")


def read_images(paths: Sequence[str | Path]) -> tuple[list[LoadedImage], list[int], list[Row[None]]]:
    """Load every image: the ones that loaded, their positions in ``paths``, and an error row for each one
    that did not."""
    from verification.io.images import load_image

    images: list[LoadedImage] = []
    kept: list[int] = []
    errors: list[Row[None]] = []
    for i, path in enumerate(paths):
        image, error = guarded(functools.partial(load_image, path), path)
        if image is None:
            errors.append(Row(index=i, path=str(path), error=error))
        else:
            images.append(image)
            kept.append(i)
    return images, kept, errors


def error_message(exc: BaseException, template: str = "{}") -> str:
    """The bounded message of an error row (``MAX_MESSAGE`` characters): a typed error's own words, any other
    exception's type and words, set in ``template``."""
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
