"""One memory budget for reading images: what decoding will cost, read from the file's header before any
pixel is decoded, and charged against limits per image and per upload (or batch, or set of archives).

The cost of one image is estimated from its header — width × height × samples per pixel × bytes per sample
(PNG IHDR incl. 16-bit and alpha, JPEG SOF, TIFF first page incl. samples, depth and float64, DICOM Rows,
Columns, SamplesPerPixel, BitsAllocated) — plus the working copies :func:`verification.io.load_image` makes:
the decoder's own buffer, the float32 pixels, the float64 LUT copies of a DICOM and the uint8 display copy.
Only the first frame/page of a multi-frame file is ever decoded (the others cost their file bytes, which
``max_bytes`` bounds); the frame count is reported and capped at ``max_frames``.

One :class:`Budget` object spans a whole upload or batch: the bytes decompressed from *all* its zip
archives, their entry count, and the decoded size of *all* images kept in memory are summed across files.

Models are bounded the same way, by what they decode to (:class:`ModelLimits`): the float32 weights
counted from the file's declarations (safetensors header, a .pt2's weight configs, the state dict's
tensors) before the module is built.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from verification.errors import ImageLoadError, InputTooLargeError, UploadTooLargeError

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MODEL_LIMITS",
    "Budget",
    "ImageCost",
    "ModelLimits",
    "ResourceLimits",
    "check_model_decoded",
    "decoded_weight_bytes",
    "probe_image",
    "register_pil_plugins",
]

MiB = 1 << 20
GiB = 1 << 30

ImageKind = Literal["PNG", "JPEG", "TIFF", "DICOM"]

# Bytes of working memory per decoded pixel and output sample beyond the raw decode (see ImageCost.peak):
# float32 pixels (4) + float32 scratch for the display copy (4) + uint8 display (1) + bool temporaries (1).
_WORK_PER_SAMPLE = 10
# A DICOM also goes through pydicom's modality and VOI LUTs, which return float64 arrays (two alive at once).
_DICOM_LUT_PER_SAMPLE = 16
# What a LoadedImage keeps per output sample: float32 pixels + uint8 display.
_RETAINED_PER_SAMPLE = 5


@dataclass(frozen=True)
class ResourceLimits:
    """Limits on the memory that reading untrusted images may take. All are configurable by the caller.

    ``max_image_bytes``: the estimated peak working memory of decoding one image (1 GiB: an 8-bit RGB image of
    about 4,600², a 16-bit grey one of about 7,000², well above mammography sizes).
    ``max_decoded_bytes``: what the images of one upload or batch hold once decoded, summed (2 GiB).
    ``max_archive_bytes`` / ``max_archive_entries``: bytes decompressed from, and entries in, all the zip
    archives of one upload together (1 GiB, 5,000). ``max_ratio``: an entry that inflates more than this
    (after its first MiB) is treated as a zip bomb. ``max_frames``: frames/pages declared in one file.
    """

    max_image_bytes: int = 1 * GiB
    max_decoded_bytes: int = 2 * GiB
    max_archive_bytes: int = 1 * GiB
    max_archive_entries: int = 5000
    max_ratio: int = 200
    max_frames: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_image_bytes", "max_decoded_bytes", "max_archive_bytes", "max_archive_entries"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive")


DEFAULT_LIMITS = ResourceLimits()


@dataclass(frozen=True)
class ModelLimits:
    """Limits on loading one model file, by what it will hold in memory rather than by its size on disk.

    ``max_decoded_bytes``: the weights as the module keeps them (float32: an fp16 file doubles), counted
    from the file's own declarations before the module is built (1 GiB: a stock vgg16_bn holds 553 MB,
    ConvNeXt-Base 354 MB, ConvNeXt-Large 791 MB; a ViT-H/14 at 2.5 GB is refused). ``max_file_bytes``: the
    file read into memory: the decoded limit plus 128 MiB for the container (pickle, zip, a .pt2's graph).
    Loading holds the file, the decoded weights and the built module at once: about
    ``max_file_bytes + 2 × max_decoded_bytes`` at the peak (3.1 GiB at the defaults, by that sum; measured for
    the stock vgg16_bn state dict of 553 MB: the process's peak RSS grew by 1,654 MiB).
    """

    max_decoded_bytes: int = 1 * GiB
    max_file_bytes: int = 1 * GiB + 128 * MiB

    def __post_init__(self) -> None:
        for name in ("max_decoded_bytes", "max_file_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive")


DEFAULT_MODEL_LIMITS = ModelLimits()


def decoded_weight_bytes(tensors: Iterable[tuple[int, int, bool]]) -> int:
    """Bytes the module will hold for tensors given as ``(numel, itemsize, is_floating)``: floating-point
    weights are kept as float32 (4 bytes each, whatever the file stores), the others as stored."""
    return sum(numel * (4 if floating else itemsize) for numel, itemsize, floating in tensors)


def check_model_decoded(n_bytes: int, what: str, limits: ModelLimits = DEFAULT_MODEL_LIMITS) -> None:
    """Refuse a model whose weights would decode to more than ``limits.max_decoded_bytes``."""
    if n_bytes > limits.max_decoded_bytes:
        raise InputTooLargeError(
            f"{what} holds weights of {_mb(n_bytes)} once decoded to float32, above the "
            f"{_mb(limits.max_decoded_bytes)} limit for one model; raise the limit if you trust the file and "
            "have the memory (about twice that is needed while loading), or use a smaller model"
        )


@dataclass(frozen=True)
class ImageCost:
    """What decoding one image costs, from its header."""

    kind: ImageKind
    width: int
    height: int
    samples: int  # samples per pixel as decoded (palette images decode to 3 or 4)
    bytes_per_sample: int
    frames: int = 1  # frames/pages in the file; only the first is decoded
    depth: int = 1  # TIFF image depth (SGI volumes): part of the first page

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.depth

    @property
    def raw_bytes(self) -> int:
        """The decoded first frame: width × height × depth × samples × bytes per sample."""
        return self.pixels * self.samples * self.bytes_per_sample

    @property
    def out_samples(self) -> int:
        """Samples per pixel of the float32 image kept: 3 for colour, 1 for grey (alpha dropped)."""
        return 3 if self.samples >= 3 else 1

    @property
    def peak_bytes(self) -> int:
        """Estimated peak working memory: the decoder's buffer and the array it hands over (2 × raw), then the
        float32 pixels, the scratch and uint8 display copies (and a DICOM's float64 LUT outputs)."""
        per_sample = _WORK_PER_SAMPLE + (_DICOM_LUT_PER_SAMPLE if self.kind == "DICOM" else 0)
        return 2 * self.raw_bytes + self.pixels * self.out_samples * per_sample

    @property
    def retained_bytes(self) -> int:
        """What the loaded image keeps: float32 pixels and the uint8 display copy."""
        return self.width * self.height * self.out_samples * _RETAINED_PER_SAMPLE

    def describe(self) -> str:
        bits = self.bytes_per_sample * 8
        frames = f", {self.frames} frames" if self.frames > 1 else ""
        depth = f"×{self.depth}" if self.depth > 1 else ""
        return f"{self.width}×{self.height}{depth}, {self.samples} samples of {bits} bits{frames}"


_Total = Literal["archive_bytes", "archive_entries", "decoded_bytes"]


def _mb(n: int) -> str:
    return f"{n / MiB:,.0f} MiB" if n >= 10 * MiB else f"{n / MiB:,.1f} MiB"


class Budget:
    """Running totals for one upload or batch, checked before anything is decompressed or decoded.

    Thread-safe: a batch may decode images in several threads against one budget.
    """

    def __init__(self, limits: ResourceLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self.archive_bytes = 0
        self.archive_entries = 0
        self.decoded_bytes = 0

    def check_image(self, cost: ImageCost, name: str) -> None:
        """Refuse one image whose decoding would exceed the per-image limit (nothing is charged)."""
        lim = self.limits
        if cost.frames > lim.max_frames:
            raise InputTooLargeError(
                f"'{name}' declares {cost.frames:,} frames, above the limit of {lim.max_frames:,}"
            )
        if cost.peak_bytes > lim.max_image_bytes:
            raise InputTooLargeError(
                f"'{name}' ({cost.describe()}) would need about {_mb(cost.peak_bytes)} of memory to decode, "
                f"above the {_mb(lim.max_image_bytes)} limit per image; downsample it or convert it to 8-bit"
            )

    def charge_image(self, cost: ImageCost, name: str) -> None:
        """:meth:`check_image`, then :meth:`charge_decoded`."""
        self.check_image(cost, name)
        self.charge_decoded(cost, name)

    def _charge(self, total: _Total, n: int, limit: int, refusal: Callable[[int], str]) -> None:
        """Add ``n`` to the running ``total``; past ``limit`` nothing is added and ``refusal(new total)`` is
        raised as :class:`UploadTooLargeError` (an :class:`InputTooLargeError`)."""
        with self._lock:
            new = getattr(self, total) + n
            if new > limit:
                raise UploadTooLargeError(refusal(new))
            setattr(self, total, new)

    def charge_decoded(self, cost: ImageCost, name: str) -> None:
        """Add what the image keeps once loaded to the upload's decoded total, refusing past the limit."""
        limit = self.limits.max_decoded_bytes
        self._charge(
            "decoded_bytes",
            cost.retained_bytes,
            limit,
            lambda total: (
                f"'{name}' would bring the images of this upload to {_mb(total)} once decoded, "
                f"above the {_mb(limit)} limit for one upload; upload fewer or smaller images at a time"
            ),
        )

    def charge_entries(self, n: int, archive: str) -> None:
        """Add an archive's entries to the upload's count, refusing past the limit."""
        limit = self.limits.max_archive_entries
        self._charge(
            "archive_entries",
            n,
            limit,
            lambda total: (
                f"{archive} brings this upload to {total:,} archive entries; at most {limit:,} are "
                "accepted in one upload. Split it."
            ),
        )

    def archive_room(self) -> int:
        """Bytes that may still be decompressed from archives in this upload."""
        with self._lock:
            return self.limits.max_archive_bytes - self.archive_bytes

    def charge_archive_bytes(self, n: int, archive: str) -> None:
        """Add bytes decompressed from an archive to the upload's total, refusing past the limit."""
        limit = self.limits.max_archive_bytes
        self._charge(
            "archive_bytes",
            n,
            limit,
            lambda total: (
                f"{archive} brings this upload to {_mb(total)} decompressed, above the "
                f"{_mb(limit)} limit for all archives of one upload together"
            ),
        )


# ---------------------------------------------------------------------------------------------------------
# Header probes: dimensions and sample layout without decoding a pixel.

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# PNG colour type → samples per pixel as decoded (palette: RGB, RGBA with a tRNS chunk).
_PNG_SAMPLES = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _png_chunks_before_data(data: bytes) -> set[bytes]:
    """Types of the chunks between IHDR and the first IDAT (where PLTE and tRNS must be)."""
    kinds: set[bytes] = set()
    pos = 8
    while pos + 8 <= len(data) and len(kinds) < 1000:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            break
        kinds.add(kind)
        pos += 12 + length
    return kinds


def _probe_png(data: bytes, name: str) -> ImageCost:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageLoadError(f"'{name}' is a truncated PNG (no IHDR header); export it again")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_SAMPLES or depth not in (1, 2, 4, 8, 16):
        raise ImageLoadError(f"'{name}' has an invalid PNG header (colour type {colour}, bit depth {depth})")
    samples = _PNG_SAMPLES[colour]
    if colour == 3:
        kinds = _png_chunks_before_data(data)
        if b"PLTE" not in kinds:  # PIL would invent a palette: a silently wrong picture
            raise ImageLoadError(
                f"'{name}' is a palette PNG without its palette (PLTE chunk); export it again"
            )
        samples = 4 if b"tRNS" in kinds else 3
    return ImageCost("PNG", width, height, samples, 2 if depth == 16 else 1)


def _probe_jpeg(data: bytes, name: str) -> ImageCost:
    from PIL import Image, UnidentifiedImageError

    register_pil_plugins()

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:
            width, height = img.size
            samples = len(img.getbands())
            frames = int(getattr(img, "n_frames", 1))
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(
            f"'{name}' declares more pixels than allowed (decompression bomb?): {exc}"
        ) from exc
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        KeyError,
        struct.error,
    ) as exc:
        raise ImageLoadError(f"'{name}' is a corrupt or truncated JPEG ({exc}); export it again") from exc
    # PIL holds RGB as 4 bytes per pixel; count it as such.
    return ImageCost("JPEG", width, height, 4 if samples == 3 else samples, 1, frames=frames)


def register_pil_plugins() -> None:
    """Register the plugins of the accepted formats: ``Image.open(formats=[...])`` looks them up by name and
    raises KeyError for one not imported yet in a fresh process."""
    from PIL import JpegImagePlugin, PngImagePlugin, TiffImagePlugin  # noqa: F401


def _probe_tiff(data: bytes, name: str) -> ImageCost:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            frames = len(tif.pages)
            width, height = int(page.imagewidth), int(page.imagelength)
            depth = max(1, int(getattr(page, "imagedepth", 1) or 1))
            samples = max(1, int(page.samplesperpixel))
            try:
                itemsize = int(page.dtype.itemsize) if page.dtype is not None else 8
            except (ValueError, TypeError):
                itemsize = 8
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, KeyError, struct.error) as exc:
        raise ImageLoadError(f"'{name}' is a corrupt or truncated TIFF ({exc}); export it again") from exc
    return ImageCost("TIFF", width, height, samples, max(1, itemsize), frames=frames, depth=depth)


def _probe_dicom(data: bytes, name: str) -> ImageCost:
    from verification.io.dicom import dicom_geometry

    rows, cols, samples, bits, frames = dicom_geometry(data, name)
    return ImageCost("DICOM", cols, rows, samples, max(1, (bits + 7) // 8), frames=frames)


def probe_image(data: bytes, name: str, *, is_dicom: bool) -> ImageCost:
    """The cost of decoding ``data``, from its header. ``is_dicom`` as decided by the loader.

    Raises ImageLoadError for a format that is not accepted or a header that cannot be read.
    """
    try:
        if is_dicom:
            return _probe_dicom(data, name)
        if data[:8] == _PNG_MAGIC:
            return _probe_png(data, name)
        if data[:4] in _TIFF_MAGIC:
            return _probe_tiff(data, name)
        if data[:3] == b"\xff\xd8\xff":
            return _probe_jpeg(data, name)
    except (ImageLoadError, InputTooLargeError):
        raise
    except Exception as exc:  # a hostile header can make a parser raise anything (tag types, infinities)
        raise ImageLoadError(
            f"'{name}' has a malformed header ({type(exc).__name__}: {str(exc)[:160]}); export it again"
        ) from exc
    raise ImageLoadError(unsupported_format_message(data, name))


ACCEPTED_FORMATS = "PNG, JPEG, TIFF or DICOM"


def unsupported_format_message(data: bytes, name: str) -> str:
    kind = _sniff_other(data)
    what = f"a {kind} image" if kind else "not an image this tool reads (was another file renamed?)"
    return (
        f"'{name}' is {what}; accepted formats are {ACCEPTED_FORMATS} (8 or 16 bits per sample). Convert it, "
        "e.g. to PNG, and load it again."
    )


def _sniff_other(data: bytes) -> str | None:
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:4] in (b"\x00\x00\x00\x0c", b"\xffO\xffQ") or data[4:8] == b"jP  ":
        return "JPEG 2000"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIF"
    return None
