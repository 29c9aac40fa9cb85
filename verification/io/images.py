"""Reading images (PNG, JPEG, TIFF 8/16-bit, DICOM) into :class:`LoadedImage`, and from there model input.

Pixel limits are checked from the header, before the pixel data is decoded, so decompression bombs never
reach memory.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from verification.errors import ImageLoadError, InputTooLargeError, ShapeError
from verification.io.budget import (
    Budget,
    ImageCost,
    probe_image,
    register_pil_plugins,
    unsupported_format_message,
)
from verification.io.dicom import looks_like_dicom, read_dicom, unit_from_range
from verification.io.files import read_regular_file
from verification.io.records import LoadedImage, LoadedModel

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "Budget",
    "ImageInput",
    "ImagesLike",
    "as_image",
    "as_input",
    "image_cost",
    "load_image",
    "to_tensor",
]

ImageInput = LoadedImage | str | Path | bytes
"""One image as the public API takes it: already loaded, a file path, or the bytes of a file."""

ImagesLike = torch.Tensor | Sequence[ImageInput]
"""Images as the public API takes them: a model input tensor (N, C, H, W), already preprocessed, or images
to load and preprocess for the model."""

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_BYTES = 512 * 1024 * 1024
MIN_SIDE = 8
# ITU-R BT.601 luma weights, the same PIL uses for RGB → L.
LUMA = (0.299, 0.587, 0.114)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PIL_FORMATS = ("PNG", "JPEG", "TIFF")  # JPEG also opens MPO (multi-picture) files
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def _too_large(name: str, width: int, height: int, max_pixels: int) -> InputTooLargeError:
    return InputTooLargeError(
        f"'{name}' is {width}×{height} = {width * height:,} pixels, above the limit of {max_pixels:,}; "
        "downsample it or raise max_pixels"
    )


def _to_unit(arr: np.ndarray, notices: list[str]) -> np.ndarray:
    """Integer/float samples → float32 in [0, 1]: uint8 / 255, uint16 / 65535, others by their range.

    One float32 working copy, scaled in place (peak memory is part of the budget, see io.budget).
    """
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype in (np.uint8, np.uint16):
        out = arr.astype(np.float32)
        out /= np.float32(255.0 if arr.dtype == np.uint8 else 65535.0)
        return out
    if arr.dtype.kind not in "iuf":
        raise ImageLoadError(f"unsupported sample type {arr.dtype}; save the image as 8/16-bit or float")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageLoadError(
            "the image contains NaN or infinite values; re-export it with finite pixel values"
        )
    lo, hi = float(arr.min()), float(arr.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        out = arr.astype(np.float32)
        out /= np.float32(65535.0)
        return out
    notices.append(f"{arr.dtype} samples in [{lo:g}, {hi:g}] rescaled linearly to [0, 1]")
    return unit_from_range(arr, lo, hi)


def _channels_last(arr: np.ndarray, name: str, notices: list[str]) -> np.ndarray:
    """Bring samples to (H, W) or (H, W, 3); alpha is dropped with a notice."""
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF: (S, H, W)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        notices.append("alpha channel dropped (transparency is ignored)")
        arr = arr[..., 0] if arr.shape[-1] == 2 else arr[..., :3]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        return arr
    raise ImageLoadError(
        f"'{name}' has sample layout {arr.shape}; expected grayscale, RGB or RGBA. Save it as a 2-D image."
    )


def _png_is_16bit_colour(data: bytes) -> bool:
    # IHDR: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA); PIL would reduce these to 8 bits.
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[24] == 16 and data[25] in (2, 6)


def _read_png16_colour(data: bytes, name: str) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageLoadError(f"'{name}' is a 16-bit PNG that could not be decoded (corrupt or truncated?)")
    code = cv2.COLOR_BGRA2RGBA if arr.shape[-1] == 4 else cv2.COLOR_BGR2RGB
    return np.asarray(cv2.cvtColor(arr, code))


def _read_pil(
    data: bytes, name: str, max_pixels: int, notices: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        # Only the accepted formats' plugins run: no GIF/BMP/WebP, and none of PIL's riskier parsers.
        register_pil_plugins()
        img = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(
            f"'{name}' declares more pixels than allowed (decompression bomb?): {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(unsupported_format_message(data, name)) from exc
    width, height = img.size
    if width * height > max_pixels:
        raise _too_large(name, width, height, max_pixels)
    meta: dict[str, Any] = {"format": img.format, "mode": img.mode, "original_size": [height, width]}
    frames = int(getattr(img, "n_frames", 1))
    if frames > 1:
        notices.append(f"file holds {frames} frames: only the first is used")
        meta["frames"] = frames
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(
            f"'{name}' is corrupt or truncated ({exc}); download or export it again"
        ) from exc
    if img.format == "PNG" and _png_is_16bit_colour(data):
        meta["bit_depth"] = 16
        return _read_png16_colour(data, name), meta
    mode = img.mode
    pil: Image.Image = img
    orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation: photos of films are often rotated
    if orientation not in (0, 1):
        pil = ImageOps.exif_transpose(img)
        notices.append(f"rotated/flipped upright as its EXIF orientation ({orientation}) asks")
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in img.info
        pil = pil.convert("RGBA" if has_alpha else "RGB")
        notices.append("palette image converted to RGB")
    elif mode == "1":
        pil = pil.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        pil = pil.convert("RGB")
        notices.append(f"{mode} image converted to RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        raise ImageLoadError(
            f"'{name}' has unsupported pixel mode {mode}; save it as 8/16-bit grayscale or RGB"
        )
    arr = np.asarray(pil)
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    meta["bit_depth"] = int(arr.dtype.itemsize * 8) if arr.dtype.kind in "iu" else 32
    return arr, meta


def _read_tiff(
    data: bytes, name: str, max_pixels: int, notices: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            width, height = int(page.imagewidth), int(page.imagelength)
            if width * height > max_pixels:
                raise _too_large(name, width, height, max_pixels)
            frames = len(tif.pages)
            meta: dict[str, Any] = {
                "format": "TIFF",
                "original_size": [height, width],
                "bit_depth": int(page.bitspersample),
            }
            if frames > 1:
                notices.append(f"TIFF holds {frames} pages: only the first is used")
                meta["frames"] = frames
            try:
                arr = page.asarray()
            except (ValueError, ImportError, NotImplementedError) as exc:
                # Compression tifffile cannot decode without extra codecs: PIL decodes the common ones.
                logger.info("tifffile could not decode '%s' (%s); trying PIL", name, exc)
                arr, pil_meta = _read_pil(data, name, max_pixels, notices)
                return arr, {**pil_meta, "format": "TIFF"}
            if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
                info = np.iinfo(arr.dtype) if arr.dtype.kind in "iu" else None
                arr = (info.max - arr).astype(arr.dtype) if info is not None else 1.0 - arr
                notices.append("white-is-zero TIFF inverted so that high values are bright")
    except InputTooLargeError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, KeyError) as exc:
        raise ImageLoadError(f"'{name}' is a corrupt or truncated TIFF ({exc}); export it again") from exc
    return arr, meta


def _read_source(
    source: str | Path | bytes | bytearray | memoryview, name: str | None, max_bytes: int
) -> tuple[bytes, str, str]:
    """(bytes, display name, lower-case suffix) of a path or of bytes, with the file-size limit applied."""
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) > max_bytes:
            raise InputTooLargeError(
                f"image of {len(source) / 1e6:.1f} MB is above the {max_bytes / 1e6:.0f} MB limit"
            )
        name = name or "image"
        return bytes(source), name, Path(name).suffix.lower()
    path = Path(source)
    data = read_regular_file(
        path,
        kind="image file",
        advice="give the path of one image (the batch commands take folders)",
        max_bytes=max_bytes,
        too_large=lambda size: (
            f"'{path.name}' is {size / 1e6:.1f} MB, above the {max_bytes / 1e6:.0f} MB limit for images"
        ),
        error=ImageLoadError,
    )
    return data, name or path.name, path.suffix.lower()


def image_cost(data: bytes, name: str = "image") -> ImageCost:
    """What decoding ``data`` would cost, from its header (see :mod:`verification.io.budget`)."""
    return probe_image(
        data, name, is_dicom=looks_like_dicom(data) or Path(name).suffix.lower() in _DICOM_SUFFIXES
    )


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    include_identifying: bool = False,
    budget: Budget | None = None,
) -> LoadedImage:
    """Read a PNG/JPEG/TIFF (8/16-bit, float) or DICOM file or its bytes.

    Before any pixel is decoded, the header's width × height × samples × bytes per sample (plus the working
    copies) is checked against ``budget`` (by default a fresh :class:`~verification.io.budget.Budget` with
    the default limits; pass one budget to a whole upload or batch to bound their total).

    Raises ImageLoadError for unreadable, unsupported or tiny images (a side below ``MIN_SIDE``),
    InputTooLargeError above ``max_pixels``/``max_bytes`` or the budget. DICOM patient tags reach
    ``metadata`` only with ``include_identifying``.
    """
    data, name, suffix = _read_source(source, name, max_bytes)
    if not data:
        raise ImageLoadError(f"'{name}' is empty")
    is_dicom = looks_like_dicom(data) or suffix in _DICOM_SUFFIXES
    cost = probe_image(data, name, is_dicom=is_dicom)
    if cost.width * cost.height > max_pixels:
        raise _too_large(name, cost.width, cost.height, max_pixels)
    (budget if budget is not None else Budget()).charge_image(cost, name)
    try:
        pixels, meta, notices, source_format = _decode(data, name, is_dicom, max_pixels, include_identifying)
        return _finish(pixels, data, name, source_format, meta, notices)
    except (ImageLoadError, InputTooLargeError):
        raise
    except MemoryError as exc:
        raise InputTooLargeError(
            f"'{name}' ran out of memory while decoding ({cost.describe()}); lower the image size or the "
            "number of images loaded at once"
        ) from exc
    except Exception as exc:  # a hostile file can make any decoder raise anything: report it, typed
        raise ImageLoadError(
            f"'{name}' could not be decoded ({type(exc).__name__}: {str(exc)[:200]}); it is corrupt or uses "
            f"a variant this tool does not read. Export it again as {_ACCEPTED}."
        ) from exc


_ACCEPTED = "PNG, JPEG, TIFF or DICOM"


def _decode(
    data: bytes, name: str, is_dicom: bool, max_pixels: int, include_identifying: bool
) -> tuple[np.ndarray, dict[str, Any], list[str], str]:
    notices: list[str] = []
    if is_dicom:
        pixels, meta, dicom_notices = read_dicom(
            data, name=name, max_pixels=max_pixels, include_identifying=include_identifying
        )
        notices.extend(dicom_notices)
        return pixels, meta, notices, "DICOM"
    if data[:4] in _TIFF_MAGIC:
        arr, meta = _read_tiff(data, name, max_pixels, notices)
    else:
        arr, meta = _read_pil(data, name, max_pixels, notices)
    source_format = str(meta.get("format") or "image")
    meta["dtype"] = str(arr.dtype)
    arr = _channels_last(arr, name, notices)
    pixels = _to_unit(arr, notices)
    del arr
    return pixels, meta, notices, source_format


def _finish(
    pixels: np.ndarray, data: bytes, name: str, source_format: str, meta: dict[str, Any], notices: list[str]
) -> LoadedImage:
    if (
        pixels.ndim == 3
        and np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 0], pixels[..., 2])
    ):
        pixels = np.ascontiguousarray(pixels[..., 0])
        notices.append("identical R, G and B channels: treated as grayscale")
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageLoadError(
            f"'{name}' is only {width}×{height} pixels; images need at least {MIN_SIDE} pixels on each side"
        )
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    scratch = np.multiply(pixels, np.float32(255.0))
    np.rint(scratch, out=scratch)
    display = scratch.astype(np.uint8)
    del scratch
    return LoadedImage(
        pixels=pixels,
        display=display,
        name=name,
        source_format=source_format,
        content_hash=hashlib.sha256(data).hexdigest(),
        metadata=meta,
        notices=tuple(notices),
    )


def to_tensor(images: Sequence[LoadedImage] | LoadedImage, model: LoadedModel) -> torch.Tensor:
    """Model input (N, C, H, W) float32: resized (bilinear, antialiased) to ``model.input_size``,
    grey repeated to C channels or colour reduced to luma for 1-channel models, then (x - mean) / std."""
    batch = [images] if isinstance(images, LoadedImage) else list(images)
    if not batch:
        raise ShapeError("no images given: to_tensor needs at least one image")
    c = model.in_channels
    mean = torch.tensor(model.mean, dtype=torch.float32)
    std = torch.tensor(model.std, dtype=torch.float32)
    if mean.numel() not in (1, c) or std.numel() not in (1, c):
        raise ShapeError(f"model mean/std have {mean.numel()}/{std.numel()} values for {c} input channels")
    if bool((std <= 0).any()):
        raise ShapeError(f"model std must be positive, got {model.std}")
    out = []
    for img in batch:
        px = torch.from_numpy(np.ascontiguousarray(img.pixels, dtype=np.float32))
        if px.ndim == 2:
            x = px[None]
        elif px.ndim == 3 and px.shape[-1] == 3:
            x = px.permute(2, 0, 1)
        else:
            raise ShapeError(f"'{img.name}' has pixel shape {tuple(px.shape)}; expected (H, W) or (H, W, 3)")
        if x.shape[0] != c:
            if x.shape[0] == 1:
                x = x.expand(c, -1, -1)
            elif x.shape[0] == 3 and c == 1:
                luma = torch.tensor(LUMA, dtype=torch.float32)
                x = (x * luma[:, None, None]).sum(0, keepdim=True)
            else:
                raise ShapeError(
                    f"'{img.name}' has {x.shape[0]} channels but the model takes {c}; only grey→{c} and "
                    "RGB→1 can be adapted. Use a model whose in_channels is 1 or 3."
                )
        if tuple(x.shape[-2:]) != tuple(model.input_size):
            x = F.interpolate(
                x[None], size=model.input_size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        out.append(x)
    t = torch.stack(out).contiguous()
    return (t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def as_image(item: ImageInput, name: str | None = None) -> LoadedImage:
    """One image input as a :class:`LoadedImage`: read from its path or bytes (``name`` names bytes), a
    LoadedImage as it is."""
    if isinstance(item, LoadedImage):
        return item
    return load_image(item, name=name) if isinstance(item, bytes) else load_image(item)


def as_input(images: ImagesLike, model: LoadedModel, *, what: str = "images") -> torch.Tensor:
    """Model input (N, C, H, W) float32: a tensor as given (already preprocessed), else each image read
    (:func:`as_image`) and preprocessed for ``model`` (:func:`to_tensor`). ``what`` names the images in
    errors."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ShapeError(f"{what}: expected an input tensor (N, C, H, W); got {tuple(images.shape)}")
        return images.float()
    items = list(images)
    if not items:
        raise ShapeError(f"{what}: no images given")
    return to_tensor([as_image(item) for item in items], model)
