"""A generator of hostile inputs for the backend: every kind of file a user can hand it, built into a folder.

Each corpus entry is an :class:`Item`: what to build (a function writing files under the corpus root), which
public entry point to run it through (``op``), and what must happen (``expect``: ``"error"`` — a typed error
from :mod:`verification.errors` is the only acceptable answer; ``"load"`` — it must load; ``"either"`` — a
clean load or a typed error). Items are declared at import time (so tests can be parametrised by their ids)
and written to disk only by :func:`build`. Nothing binary is committed: bombs are written as streamed,
compressed data (a few hundred kB each) and the expensive ones are generated once per run.

Categories: ``image`` (PNG/JPEG/TIFF/GIF/BMP/WebP and header lies), ``dicom`` (hand-built edge cases),
``pydicom`` (pydicom's own test files, offline), ``zip`` (uploads through the dashboard's upload path),
``model`` (model archives), ``sidecar`` (JSON sidecars), ``metrics`` / ``cams`` (the maths entry points) and
``cli`` (``python -m verification`` commands).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.builders import dataset_bytes, dicom_dataset, zip_bytes

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo"
SOUND = DEMO / "models" / "sound.safetensors"
SOUND_JSON = DEMO / "models" / "sound.json"
SEGMENTATION = DEMO / "models" / "segmentation.safetensors"
BUNDLE = DEMO / "references" / "sound_gradcam"
GOOD_PNGS = sorted((DEMO / "images" / "test").glob("00[0-2]_*.png"))

Builder = Callable[[Path], dict[str, Any]]


@dataclass(frozen=True)
class Item:
    """One hostile input. ``build(root)`` writes its files and returns the op's arguments (JSON-able)."""

    id: str
    category: str
    # load_image | load_images | upload | load_model | compute_metrics | compute_cams | cams_threads | cli...
    op: str
    build: Builder = field(repr=False)
    expect: str = "error"  # error | load | either
    # marks the dangerous inputs (bombs); every input runs in its own forked child anyway, except the
    # read-only pydicom test files, which share children
    isolate: bool = False
    timeout_s: float = 60.0
    note: str = ""


ITEMS: list[Item] = []


def item(
    id: str,
    category: str,
    op: str,
    *,
    expect: str = "error",
    isolate: bool = False,
    timeout_s: float = 60.0,
    note: str = "",
) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        if any(i.id == id for i in ITEMS):
            raise ValueError(f"duplicate corpus id {id}")
        ITEMS.append(Item(id, category, op, fn, expect, isolate, timeout_s, note))
        return fn

    return register


def marker_path(root: Path, name: str) -> Path:
    """Where a code-execution payload would leave its trace; the runner checks none of them exists."""
    return root / "markers" / f"PWNED-{name}"


# =========================================================================================== byte builders


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bytes(
    width: int,
    height: int,
    *,
    bit_depth: int = 8,
    colour: int = 2,
    rows: int | None = None,
    row: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    """A PNG whose IDAT is ``rows`` copies of one filtered scanline (default: all rows, zeros), streamed
    through zlib so an 8192² image costs a few hundred kB of output and never its decoded size in memory."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    line = row if row is not None else b"\x00" + bytes(width * channels * bit_depth // 8)
    comp = zlib.compressobj(1)
    parts = []
    n = height if rows is None else rows
    block = line * max(1, (1 << 22) // max(len(line), 1))
    per_block = len(block) // len(line)
    done = 0
    while done < n:
        k = min(per_block, n - done)
        parts.append(comp.compress(block if k == per_block else line * k))
        done += k
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def small_png(size: int = 64, mode: str = "L") -> bytes:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    grey = ((xx * 3 + yy * 2) % 256).astype(np.uint8)
    img = Image.fromarray(grey, "L").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pil_bytes(fmt: str, size: int = 64, mode: str = "RGB", **kwargs: Any) -> bytes:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack([(xx * 4) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def tiff_bytes(
    width: int,
    height: int,
    *,
    samples: int = 1,
    bits: int = 8,
    sample_format: int = 1,
    planar: int = 1,
    strip_rows: int | None = None,
    payload: bytes | None = None,
) -> bytes:
    """A classic little-endian TIFF whose every strip points at the same deflated block of zeros: a decoded
    size of ``width·height·samples·bits/8`` from a file of a few kB (a decompression bomb that is valid)."""
    bytes_per_row = width * (samples if planar == 1 else 1) * bits // 8
    rows = strip_rows or max(1, min(height, (8 << 20) // max(bytes_per_row, 1)))
    strips_per_plane = -(-height // rows)
    n_strips = strips_per_plane * (samples if planar == 2 else 1)
    block = payload if payload is not None else zlib.compress(bytes(bytes_per_row * rows), 9)
    entries: list[tuple[int, int, int, Any]] = []  # tag, type, count, value(s)
    SHORT, LONG = 3, 4
    entries.append((256, LONG, 1, width))
    entries.append((257, LONG, 1, height))
    entries.append((258, SHORT, samples, [bits] * samples))
    entries.append((259, SHORT, 1, 8))  # deflate
    photometric = 2 if samples == 3 and planar == 1 else 1
    extra_samples = 0 if photometric == 2 else samples - 1
    entries.append((262, SHORT, 1, photometric))
    entries.append((273, LONG, n_strips, None))  # strip offsets, filled below
    entries.append((277, SHORT, 1, samples))
    entries.append((278, LONG, 1, rows))
    entries.append((279, LONG, n_strips, [len(block)] * n_strips))
    entries.append((284, SHORT, 1, planar))
    entries.append((339, SHORT, samples, [sample_format] * samples))
    if extra_samples:
        entries.append((338, SHORT, extra_samples, [0] * extra_samples))
    entries.sort(key=lambda e: e[0])
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    extra_offset = ifd_offset + ifd_size
    extra = bytearray()
    packed_entries: list[tuple[int, int, int, Any]] = []
    for tag, typ, count, value in entries:
        size = {SHORT: 2, LONG: 4}[typ]
        if tag == 273:
            packed_entries.append((tag, typ, count, "offsets"))
            continue
        vals = value if isinstance(value, list) else [value]
        raw = b"".join(struct.pack("<H" if typ == SHORT else "<I", v) for v in vals)
        if size * count <= 4:
            packed_entries.append((tag, typ, count, raw.ljust(4, b"\0")))
        else:
            packed_entries.append((tag, typ, count, extra_offset + len(extra)))
            extra += raw
            if len(extra) % 2:
                extra += b"\0"
    offsets_at = extra_offset + len(extra)
    extra += bytes(4 * n_strips)
    block_offset = extra_offset + len(extra)
    if n_strips > 1:
        extra[offsets_at - extra_offset :] = struct.pack(f"<{n_strips}I", *([block_offset] * n_strips))
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(packed_entries))
    for tag, typ, count, value in packed_entries:
        if value == "offsets":
            value = struct.pack("<I", block_offset) if n_strips == 1 else struct.pack("<I", offsets_at)
        elif isinstance(value, int):
            value = struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + value
    out += struct.pack("<I", 0)
    out += extra
    out += block
    return bytes(out)


def _dataset(rows: int = 64, cols: int = 64, *, bits: int = 16, photometric: str = "MONOCHROME2") -> Any:
    """A valid small CR DICOM (12 bits stored in 16, or 8 in 8) as a pydicom Dataset, for items to break."""
    import numpy as np

    yy, xx = np.mgrid[0:rows, 0:cols]
    stored = min(bits, 12)
    pixels = ((xx * 37 + yy * 11) % (1 << stored)).astype(np.uint16 if bits == 16 else np.uint8)
    return dicom_dataset(pixels, photometric, stored, PatientName="Fuzz^Hostile")


def patch_value(data: bytes, group: int, elem: int, value: bytes) -> bytes:
    """Replace the value of a short explicit-VR element in written DICOM bytes (same length), e.g. to put text
    where a number belongs, which pydicom will not write on its own."""
    at = data.index(struct.pack("<HH", group, elem))
    length = struct.unpack("<H", data[at + 6 : at + 8])[0]
    if len(value) != length:
        raise ValueError(f"value must be {length} bytes, got {len(value)}")
    return data[: at + 8] + value + data[at + 8 + length :]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _img(root: Path, name: str, data: bytes) -> dict[str, Any]:
    return {"path": str(_write(root / "images" / name, data))}


def _folder(root: Path, where: str, name: str) -> dict[str, Any]:
    """A folder ``<where>/<name>`` passed where a file belongs; the error must not say it does not exist."""
    d = root / where / name
    d.mkdir(parents=True, exist_ok=True)
    return {"path": str(d), "not_in_message": "does not exist"}


def _image_item(
    id: str,
    name: str,
    data: Callable[[], bytes],
    *,
    category: str = "image",
    expect: str = "error",
    isolate: bool = False,
    note: str = "",
) -> None:
    """An item of one file, ``images/<name>`` holding ``data()``, run through ``load_image``."""

    def build(root: Path) -> dict[str, Any]:
        return _img(root, name, data())

    item(id, category, "load_image", expect=expect, isolate=isolate, note=note)(build)


# =========================================================================================== images

_BOMBS: dict[str, bytes] = {}


def bomb_png_rgb8() -> bytes:
    """8192² RGB: 64 Mi pixels (at the pixel limit), 192 MiB of samples, ~200 kB of file."""
    if "rgb8" not in _BOMBS:
        _BOMBS["rgb8"] = png_bytes(8192, 8192, bit_depth=8, colour=2)
    return _BOMBS["rgb8"]


_image_item(
    "png_8192_rgb", "bomb_rgb8.png", bomb_png_rgb8, expect="either", isolate=True, note="decompression bomb"
)
_image_item(
    "png_8192_rgba16",
    "bomb_rgba16.png",
    lambda: png_bytes(8192, 8192, bit_depth=16, colour=6),
    expect="either",
    isolate=True,
    note="RGBA 16-bit bomb",
)
_image_item(
    "png_8192_gray16",
    "bomb_gray16.png",
    lambda: png_bytes(8192, 8192, bit_depth=16, colour=0),
    expect="either",
    isolate=True,
    note="16-bit grey bomb",
)
_image_item(
    "png_header_100000sq",
    "huge_header.png",
    lambda: png_bytes(100000, 100000, rows=4),
    note="IHDR says 100000², little data",
)
_image_item(
    "png_header_65535x1100",
    "huge_header2.png",
    lambda: png_bytes(65535, 1100, colour=0, rows=2),
    note="just above the pixel limit, little data",
)
_image_item(
    "png_header_1x100M",
    "tall.png",
    lambda: png_bytes(1, 100_000_000, colour=0, rows=2),
    note="1 pixel wide, 10^8 tall",
)


@item(
    "png_100k_idat_chunks", "image", "load_image", expect="either", note="pixel data split in 100000 chunks"
)
def _(root: Path) -> dict[str, Any]:
    data = png_bytes(256, 256, colour=0)
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    payload = data[start + 8 : start + 8 + length]
    pieces = [payload[i : i + 1] for i in range(len(payload))]
    pieces += [b""] * (100_000 - len(pieces))
    chunks = b"".join(_chunk(b"IDAT", p) for p in pieces)
    return _img(root, "manyidat.png", data[:start] + chunks + data[start + 12 + length :])


@item("png_apng_acTL_1e9", "image", "load_image", expect="either", note="animation control says 10^9 frames")
def _(root: Path) -> dict[str, Any]:
    return _img(
        root, "apng.png", png_bytes(64, 64, colour=0, extra=_chunk(b"acTL", struct.pack(">II", 10**9, 0)))
    )


@item("png_truncated", "image", "load_image")
def _(root: Path) -> dict[str, Any]:
    data = small_png(256, "RGB")
    return _img(root, "truncated.png", data[: len(data) // 2])


@item("png_bad_crc", "image", "load_image", expect="either")
def _(root: Path) -> dict[str, Any]:
    data = bytearray(small_png(128))
    idat = data.find(b"IDAT")
    data[idat + 20] ^= 0xFF
    return _img(root, "badcrc.png", bytes(data))


_image_item("png_signature_only", "sig.png", lambda: b"\x89PNG\r\n\x1a\n")
_image_item("png_zero_width", "zero_w.png", lambda: png_bytes(0, 64, colour=0, rows=64, row=b"\x00"))
_image_item("png_4x4", "tiny.png", lambda: small_png(4), note="below the minimum side")


@item("png_text_bomb", "image", "load_image", expect="either", note="zTXt inflating to 64 MB")
def _(root: Path) -> dict[str, Any]:
    text = b"Comment\x00\x00" + zlib.compress(bytes(64 << 20), 9)
    return _img(root, "ztxt.png", png_bytes(64, 64, colour=0, extra=_chunk(b"zTXt", text)))


@item("png_iccp_bomb", "image", "load_image", expect="either", note="iCCP profile inflating to 64 MB")
def _(root: Path) -> dict[str, Any]:
    icc = b"icc\x00\x00" + zlib.compress(bytes(64 << 20), 9)
    return _img(root, "iccp.png", png_bytes(64, 64, colour=2, extra=_chunk(b"iCCP", icc)))


_image_item(
    "png_palette_no_plte",
    "noplte.png",
    lambda: png_bytes(64, 64, colour=3),
    note="colour type 3 without PLTE",
)
_image_item(
    "png_16bit_rgb_valid", "rgb16.png", lambda: png_bytes(64, 64, bit_depth=16, colour=2), expect="load"
)
_image_item(
    "png_palette_alpha_valid", "pal.png", lambda: pil_bytes("PNG", mode="P", transparency=0), expect="load"
)
_image_item("png_1bit_valid", "onebit.png", lambda: pil_bytes("PNG", mode="1"), expect="load")
_image_item("empty_png", "empty.png", lambda: b"")
_image_item("text_as_png", "notes.png", lambda: b"patient notes, not an image\n" * 10)


@item("zip_as_png", "image", "load_image")
def _(root: Path) -> dict[str, Any]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", small_png())
    return _img(root, "archive.png", buf.getvalue())


_image_item(
    "png_as_jpg", "really_png.jpg", lambda: small_png(), expect="either", note="wrong extension, valid PNG"
)
_image_item(
    "dicom_as_png",
    "really_dicom.png",
    lambda: dataset_bytes(_dataset()),
    expect="either",
    note="wrong extension, valid DICOM",
)
_image_item("png_as_dcm", "really_png.dcm", lambda: small_png(), expect="either", note="PNG named .dcm")


@item("directory", "image", "load_image", note="a folder passed as the image; must not say 'does not exist'")
def _(root: Path) -> dict[str, Any]:
    return _folder(root, "images", "a_folder.png")


@item("jpeg_truncated", "image", "load_image")
def _(root: Path) -> dict[str, Any]:
    data = pil_bytes("JPEG", 256, quality=95)
    return _img(root, "truncated.jpg", data[: len(data) // 3])


@item("jpeg_header_65500sq", "image", "load_image", note="SOF says 65500², no scan data")
def _(root: Path) -> dict[str, Any]:
    data = bytearray(pil_bytes("JPEG", 16))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    return _img(root, "huge.jpg", bytes(data))


_image_item(
    "jpeg_soi_only",
    "soi.jpg",
    lambda: b"\xff\xd8\xff",
    note="3 bytes: JPEG start-of-image (found by hypothesis)",
)
_image_item("jpeg_garbage", "garbage.jpg", lambda: b"\xff\xd8\xff\xe0" + os.urandom(4096))
_image_item("jpeg_cmyk_valid", "cmyk.jpg", lambda: pil_bytes("JPEG", mode="CMYK"), expect="load")
_image_item("gif", "a.gif", lambda: pil_bytes("GIF", mode="P"), expect="either", note="undocumented format")


@item("gif_animated_500", "image", "load_image", expect="either", note="500 frames")
def _(root: Path) -> dict[str, Any]:
    from PIL import Image

    frames = [Image.new("L", (64, 64), i % 256) for i in range(500)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return _img(root, "anim.gif", buf.getvalue())


_image_item("bmp", "a.bmp", lambda: pil_bytes("BMP"), expect="either", note="undocumented format")


@item("bmp_header_huge", "image", "load_image", note="BMP header 60000² with no pixel data")
def _(root: Path) -> dict[str, Any]:
    data = bytearray(pil_bytes("BMP", 16))
    data[18:26] = struct.pack("<ii", 60000, 60000)
    return _img(root, "huge.bmp", bytes(data))


_image_item("webp", "a.webp", lambda: pil_bytes("WEBP"), expect="either", note="undocumented format")
_image_item("ico", "a.ico", lambda: pil_bytes("ICO", 64), expect="either", note="undocumented format")


@item("eps", "image", "load_image", note="PostScript: PIL would run Ghostscript to draw it")
def _(root: Path) -> dict[str, Any]:
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n"
        b"newpath 0 0 moveto 64 64 lineto stroke showpage\n%%EOF\n"
    )
    return _img(root, "a.eps", eps)


_image_item(
    "tiff_8192_float64",
    "bomb_f64.tif",
    lambda: tiff_bytes(8192, 8192, bits=64, sample_format=3),
    expect="either",
    isolate=True,
    note="512 MiB of samples",
)


@item("tiff_1024_x1000_float64", "image", "load_image", isolate=True, note="1000 samples/pixel, 7.8 GiB")
def _(root: Path) -> dict[str, Any]:
    return _img(
        root, "bomb_planar.tif", tiff_bytes(1024, 1024, samples=1000, bits=64, sample_format=3, planar=2)
    )


def _tifffile(arr: Any, **kwargs: Any) -> bytes:
    """``arr`` written by tifffile (``imwrite``'s keyword arguments)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kwargs)
    return buf.getvalue()


def _ramp32() -> Any:
    """A 32×32 uint16 ramp (0, 61, 122, …): the small valid TIFF the hypothesis-found items break."""
    import numpy as np

    return (np.arange(32 * 32, dtype=np.uint16) * 61).reshape(32, 32)


@item("tiff_multipage_100", "image", "load_image", expect="either", note="100 pages of float64")
def _(root: Path) -> dict[str, Any]:
    import numpy as np
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        for i in range(100):
            tw.write(np.full((128, 128), i / 100.0), compression="zlib")
    return _img(root, "pages.tif", buf.getvalue())


@item("tiff_nan", "image", "load_image", note="float32 with NaN")
def _(root: Path) -> dict[str, Any]:
    import numpy as np

    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    arr[3, 3] = np.nan
    return _img(root, "nan.tif", _tifffile(arr))


@item("tiff_truncated", "image", "load_image")
def _(root: Path) -> dict[str, Any]:
    import numpy as np

    data = _tifffile(np.arange(256 * 256, dtype=np.uint16).reshape(256, 256))
    return _img(root, "trunc.tif", data[: len(data) // 2])


_image_item(
    "tiff_5_samples",
    "five.tif",
    lambda: _tifffile(
        __import__("numpy").zeros((5, 64, 64), "uint8"), photometric="minisblack", planarconfig="separate"
    ),
    expect="either",
    note="5 samples per pixel",
)


@item("tiff_header_lie", "image", "load_image", note="IFD says 30000² uint8, one tiny strip")
def _(root: Path) -> dict[str, Any]:
    return _img(
        root, "lie.tif", tiff_bytes(30000, 30000, strip_rows=30000, payload=zlib.compress(b"\0" * 64))
    )


@item("tiff_ifd_loop", "image", "load_image", expect="either", note="the IFD chain points back at itself")
def _(root: Path) -> dict[str, Any]:
    data = bytearray(tiff_bytes(64, 64))
    n = struct.unpack("<H", data[8:10])[0]
    struct.pack_into("<I", data, 8 + 2 + 12 * n, 8)  # next IFD offset = the first IFD
    return _img(root, "loop.tif", bytes(data))


@item(
    "tiff_ifd_zeroed",
    "image",
    "load_image",
    note="IFD entries from the 3rd field on zeroed (found by hypothesis)",
)
def _(root: Path) -> dict[str, Any]:
    data = bytearray(_tifffile(_ramp32()))
    data[26:200] = bytes(174)
    return _img(root, "ifd_zeroed.tif", bytes(data))


def _tiff_tag_type(tag: int, new_type: int) -> Builder:
    """A small valid TIFF whose IFD entry ``tag`` is given another field type (found by hypothesis)."""

    def build(root: Path) -> dict[str, Any]:
        data = bytearray(_tifffile(_ramp32()))
        ifd = struct.unpack("<I", data[4:8])[0]
        for k in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
            at = ifd + 2 + 12 * k
            if struct.unpack("<H", data[at : at + 2])[0] == tag:
                struct.pack_into("<H", data, at + 2, new_type)
        return _img(root, f"tag{tag}_type{new_type}.tif", bytes(data))

    return build


for _tag, _type, _what in (
    (256, 5, "ImageWidth as RATIONAL"),
    (278, 12, "RowsPerStrip as DOUBLE"),
    (278, 5, "RowsPerStrip as RATIONAL"),
    (277, 2, "SamplesPerPixel as ASCII"),
):
    item(f"tiff_tag{_tag}_type{_type}", "image", "load_image", note=_what)(_tiff_tag_type(_tag, _type))


_image_item("tiff_valid_uint16", "ok16.tif", lambda: tiff_bytes(256, 256, bits=16), expect="load")


# =========================================================================================== DICOM


def _dicom_data(dataset: Callable[[], Any] = _dataset, **changes: Any) -> bytes:
    """The bytes of ``dataset()`` with its attributes ``changes`` set (in order)."""
    ds = dataset()
    for key, value in changes.items():
        setattr(ds, key, value)
    return dataset_bytes(ds)


def _dicom_item(
    id: str,
    name: str,
    *,
    dataset: Callable[[], Any] = _dataset,
    expect: str = "error",
    note: str = "",
    **changes: Any,
) -> None:
    """An item of one DICOM file: the valid dataset (or ``dataset()``) with its attributes ``changes`` set."""
    _image_item(id, name, lambda: _dicom_data(dataset, **changes), category="dicom", expect=expect, note=note)


_dicom_item("dicom_valid", "valid.dcm", expect="load")
_dicom_item("dicom_window_width_0", "ww0.dcm", expect="either", WindowCenter=2048, WindowWidth=0)
_dicom_item("dicom_window_width_negative", "wwneg.dcm", expect="either", WindowCenter=2048, WindowWidth=-100)


@item("dicom_window_text", "dicom", "load_image", expect="either", note="WindowWidth 'abc' (DS)")
def _(root: Path) -> dict[str, Any]:
    data = _dicom_data(WindowCenter="1234", WindowWidth="5678")
    data = patch_value(patch_value(data, 0x0028, 0x1050, b"abcd"), 0x0028, 0x1051, b"nan ")
    return _img(root, "wwtext.dcm", data)


def _palette() -> Any:
    return _dataset(bits=8, photometric="PALETTE COLOR")


def _frames_1a() -> bytes:
    """NumberOfFrames written as the text '1A' (pydicom will not write it on its own)."""
    return patch_value(_dicom_data(NumberOfFrames=10), 0x0028, 0x0008, b"1A")


_dicom_item("dicom_palette_no_lut", "palette.dcm", dataset=_palette)
_image_item(
    "dicom_frames_1A",
    "frames1a.dcm",
    _frames_1a,
    category="dicom",
    expect="either",
    note="NumberOfFrames '1A'",
)
_dicom_item(
    "dicom_frames_100000",
    "frames_many.dcm",
    expect="either",
    note="frames say 10^5, data has 1",
    NumberOfFrames=100000,
)
_dicom_item("dicom_frames_negative", "frames_neg.dcm", expect="either", NumberOfFrames=-3)


@item("dicom_no_pixels", "dicom", "load_image")
def _(root: Path) -> dict[str, Any]:
    ds = _dataset()
    del ds.PixelData
    return _img(root, "nopixels.dcm", dataset_bytes(ds))


_dicom_item("dicom_bits_allocated_7", "bits7.dcm", BitsAllocated=7)
_dicom_item(
    "dicom_bits_allocated_64", "bits64.dcm", expect="either", BitsAllocated=64, BitsStored=64, HighBit=63
)
_dicom_item("dicom_bits_stored_0", "stored0.dcm", expect="either", BitsStored=0, HighBit=0)
_dicom_item(
    "dicom_rows_65535",
    "huge_rows.dcm",
    note="header 65535² with 8 kB of pixel data",
    Rows=65535,
    Columns=65535,
)
_dicom_item("dicom_rows_zero", "rows0.dcm", Rows=0)


@item("dicom_pixels_short", "dicom", "load_image", expect="either", note="half the pixel bytes")
def _(root: Path) -> dict[str, Any]:
    ds = _dataset()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return _img(root, "short.dcm", dataset_bytes(ds))


_dicom_item(
    "dicom_rescale_inf",
    "slope.dcm",
    expect="either",
    note="RescaleSlope 1e308",
    RescaleSlope="1e308",
    RescaleIntercept="0",
)
_dicom_item(
    "dicom_rgb_as_mono",
    "rgbmono.dcm",
    dataset=lambda: _dataset(bits=8),
    expect="either",
    note="SamplesPerPixel 3, MONOCHROME2",
    SamplesPerPixel=3,
    PlanarConfiguration=0,
    PixelData=bytes(64 * 64 * 3),
)


@item("dicom_voi_lut_bogus", "dicom", "load_image", expect="either", note="VOI LUT descriptor [0, 0, 40]")
def _(root: Path) -> dict[str, Any]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = _dataset()
    lut = Dataset()
    lut.LUTDescriptor = [0, 0, 40]
    lut.LUTData = struct.pack("<3H", 0, 1, 2)
    ds.VOILUTSequence = Sequence([lut])
    return _img(root, "voilut.dcm", dataset_bytes(ds))


@item("dicom_jpeg2000_garbage", "dicom", "load_image", note="JPEG 2000 syntax, random fragments")
def _(root: Path) -> dict[str, Any]:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = _dataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([os.urandom(512)])
    ds["PixelData"].VR = "OB"
    return _img(root, "j2k.dcm", dataset_bytes(ds))


@item("dicom_truncated", "dicom", "load_image")
def _(root: Path) -> dict[str, Any]:
    data = dataset_bytes(_dataset())
    return _img(root, "trunc.dcm", data[: len(data) - 5000])


_image_item("dicom_preamble_only", "preamble.dcm", lambda: b"\0" * 128 + b"DICM", category="dicom")


@item("dicom_nested_sequences_5000", "dicom", "load_image", note="sequences nested 5000 deep")
def _(root: Path) -> dict[str, Any]:
    # implicit VR little endian, undefined lengths: (0040,0275) SQ > item > (0040,0275) SQ > item > ...
    depth = 5000
    open_ = struct.pack("<HHI", 0x0040, 0x0275, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    body = struct.pack("<HHI", 0x0008, 0x0060, 2) + b"CR" + open_ * depth + close * depth
    return _img(root, "nested.dcm", body)


@item("dicom_element_length_lie", "dicom", "load_image", note="an element claiming 4 GB")
def _(root: Path) -> dict[str, Any]:
    body = struct.pack("<HHI", 0x0008, 0x0060, 2) + b"CR" + struct.pack("<HHI", 0x0010, 0x0010, 0xFFFFFFF0)
    return _img(root, "lenlie.dcm", body + b"A" * 100)


def _meta_vr(vr: bytes) -> Builder:
    def build(root: Path) -> dict[str, Any]:
        data = dataset_bytes(_dataset(32, 32))
        at = data.index(b"\x02\x00\x00\x00UL")
        return _img(root, f"meta_{vr.decode()}.dcm", data[: at + 4] + vr + data[at + 6 :])

    return build


item("dicom_meta_vr_UN", "dicom", "load_image", note="group length VR UL → UN (found by hypothesis)")(
    _meta_vr(b"UN")
)
item("dicom_meta_vr_SQ", "dicom", "load_image", note="group length VR UL → SQ")(_meta_vr(b"SQ"))


@item("dicom_big_endian_bare", "dicom", "load_image", expect="either")
def _(root: Path) -> dict[str, Any]:
    body = struct.pack(">HHI", 0x0008, 0x0060, 2) + b"CR"
    return _img(root, "bigendian.dcm", body * 3)


# =========================================================================================== pydicom's files


@item(
    "pydicom_testdata",
    "pydicom",
    "load_images",
    expect="either",
    timeout_s=240.0,
    note="every file of pydicom.data.get_testdata_files(), offline",
)
def _(root: Path) -> dict[str, Any]:
    from pydicom.data import get_testdata_files

    return {"paths": sorted(get_testdata_files())}


# =========================================================================================== zips


def _zip_stream(name: str, total: int, *, level: int = 1) -> bytes:
    """One entry of ``total`` zero bytes, written in chunks (never all in memory)."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf,
        zf.open(name, "w", force_zip64=total > (1 << 31)) as fh,
    ):
        chunk = bytes(8 << 20)
        left = total
        while left > 0:
            fh.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    return buf.getvalue()


def _rezip(
    archive: bytes, change: Callable[[str, bytes], bytes], *, method: int = zipfile.ZIP_STORED
) -> bytes:
    """``archive`` written again member by member, each member's bytes put through ``change(name, data)``."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as out:
        for info in src.infolist():
            out.writestr(info.filename, change(info.filename, src.read(info.filename)))
    return buf.getvalue()


def _upload(root: Path, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    paths = []
    for name, data in files:
        paths.append(str(_write(root / "uploads" / name, data)))
    return {"files": paths}


@item("zip_bomb_512MiB", "zip", "upload", isolate=True, note="512 MiB of zeros in one entry (1000:1)")
def _(root: Path) -> dict[str, Any]:
    return _upload(root, [("bomb.zip", _zip_stream("normal/a.png", 512 << 20))])


@item(
    "zip_bomb_size_lie",
    "zip",
    "upload",
    expect="error",
    isolate=True,
    note="entry declares 100 bytes, inflates to 256 MiB",
)
def _(root: Path) -> dict[str, Any]:
    data = bytearray(_zip_stream("a.png", 256 << 20))
    # patch the declared uncompressed size in the local header and the central directory
    lh = data.find(b"PK\x03\x04")
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, lh + 22, 100)
    struct.pack_into("<I", data, cd + 24, 100)
    return _upload(root, [("lie.zip", bytes(data))])


@item(
    "zip_24_max_pngs",
    "zip",
    "upload",
    isolate=True,
    timeout_s=120.0,
    note="24 PNGs of 8192² RGB in one 5 MB zip",
)
def _(root: Path) -> dict[str, Any]:
    png = bomb_png_rgb8()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(24):
            zf.writestr(f"normal/{i:02d}.png", png)
    return _upload(root, [("maxpngs.zip", buf.getvalue())])


def _compressible(total: int) -> bytes:
    """A zip entry of ``total`` bytes that deflates ~90:1 (a 16 kB random block repeated: inside deflate's
    window, so under the 200:1 bomb ratio), as a whole archive."""
    block = bytes(os.urandom(16 << 10)) * 256  # 4 MiB
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(total // len(block)):
            zf.writestr(f"normal/{i:03d}.png", block)
    return buf.getvalue()


@item(
    "zip_four_archives",
    "zip",
    "upload",
    isolate=True,
    timeout_s=120.0,
    note="four zips of 320 MiB each (~90:1) in one upload: each under 1 GiB, together above",
)
def _(root: Path) -> dict[str, Any]:
    data = _compressible(320 << 20)
    return _upload(root, [(f"part{k}.zip", data) for k in range(4)])


@item(
    "zip_24_pngs_4096",
    "zip",
    "upload",
    expect="either",
    isolate=True,
    timeout_s=120.0,
    note="24 PNGs of 4096² RGB: each under the per-image budget, 5.6 GiB of float pixels together",
)
def _(root: Path) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(3)
    row = (
        b"\x00" + rng.integers(0, 255, 4096 * 3, dtype=np.uint8).tobytes()
    )  # distinct pixels, identical rows
    png = png_bytes(4096, 4096, bit_depth=8, colour=2, row=row)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(24):
            zf.writestr(f"normal/{i:02d}.png", png[:-12] + _chunk(b"tEXt", f"n\x00{i}".encode()) + png[-12:])
    return _upload(root, [("pngs4096.zip", buf.getvalue())])


@item("zip_6000_entries", "zip", "upload", note="more entries than allowed")
def _(root: Path) -> dict[str, Any]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(6000):
            zf.writestr(f"e{i}.txt", b"")
    return _upload(root, [("many.zip", buf.getvalue())])


@item("zip_path_traversal", "zip", "upload", expect="either", note="../, absolute and backslash names")
def _(root: Path) -> dict[str, Any]:
    png = small_png()
    names = ["../../evil.png", "/tmp/abs_evil.png", "..\\..\\win_evil.png", "normal/../../../up.png"]
    spec = _upload(root, [("traversal.zip", zip_bytes([(n, png) for n in names]))])
    outside = [root.parent / "evil.png", root.parent.parent / "evil.png", Path("/tmp/abs_evil.png")]
    outside += [root.parent.parent / "up.png", root.parent / "win_evil.png"]
    return {**spec, "must_not_exist": [str(p) for p in outside if not p.exists()]}


@item("zip_nested", "zip", "upload", expect="either", note="a zip in a zip in a zip")
def _(root: Path) -> dict[str, Any]:
    inner = zip_bytes([("normal/a.png", small_png())])
    for _ in range(3):
        inner = zip_bytes([("inner.zip", inner), ("normal/b.png", small_png())])
    return _upload(root, [("nested.zip", inner)])


@item("zip_truncated", "zip", "upload")
def _(root: Path) -> dict[str, Any]:
    data = zip_bytes([("normal/a.png", small_png())] * 1)
    return _upload(root, [("trunc.zip", data[: len(data) - 30])])


@item("zip_encrypted_flag", "zip", "upload", note="entry flagged encrypted")
def _(root: Path) -> dict[str, Any]:
    data = bytearray(zip_bytes([("normal/a.png", small_png())]))
    struct.pack_into("<H", data, data.find(b"PK\x03\x04") + 6, 1)
    struct.pack_into("<H", data, data.find(b"PK\x01\x02") + 8, 1)
    return _upload(root, [("enc.zip", bytes(data))])


@item("zip_not_a_zip", "zip", "upload")
def _(root: Path) -> dict[str, Any]:
    return _upload(root, [("fake.zip", b"PK\x03\x04" + os.urandom(200))])


@item("zip_mixed_valid", "zip", "upload", expect="load", note="good PNGs, a DICOM, a README and a bad file")
def _(root: Path) -> dict[str, Any]:
    entries = [
        ("normal/a.png", small_png()),
        ("nodule/b.dcm", dataset_bytes(_dataset())),
        ("README.txt", b"hello"),
        ("nodule/broken.png", b"\x89PNG\r\n\x1a\nxx"),
    ]
    return _upload(root, [("mixed.zip", zip_bytes(entries))])


@item("zip_zip64_declared_huge", "zip", "upload", note="central directory declares 2^40 bytes")
def _(root: Path) -> dict[str, Any]:
    data = bytearray(zip_bytes([("a.png", small_png())]))
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 0xFFFFFFF0)
    return _upload(root, [("declared.zip", bytes(data))])


# =========================================================================================== models


def _model_file(root: Path, name: str, data: bytes, sidecar: dict[str, Any] | None = None) -> dict[str, Any]:
    path = _write(root / "models" / name, data)
    out: dict[str, Any] = {"path": str(path)}
    if sidecar is not None:
        sc = _write(root / "models" / f"{Path(name).stem}.sidecar.json", json.dumps(sidecar).encode())
        out["sidecar"] = str(sc)
    return out


def _sound_sidecar() -> dict[str, Any]:
    return dict(json.loads(SOUND_JSON.read_text()))


def _sound_state() -> dict[str, Any]:
    from safetensors.torch import load_file

    return dict(load_file(str(SOUND)))


def _safetensors(sd: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return bytes(save({k: v.contiguous() for k, v in sd.items()}))


class _Payload:
    """Unpickling this creates the file ``path`` (``open(path, "w")``): proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def _tiny_net() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()


_PT2: dict[str, bytes] = {}


def pt2_bytes() -> bytes:
    """A valid torch.export archive of a tiny CNN (1×32×32 input, dynamic batch)."""
    if "ok" not in _PT2:
        import torch

        net = _tiny_net()
        x = torch.zeros(2, 1, 32, 32)
        ep = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
        buf = io.BytesIO()
        torch.export.save(ep, buf)
        _PT2["ok"] = buf.getvalue()
    return _PT2["ok"]


def pt2_with_pickle(marker: Path, which: str = "weights") -> bytes:
    """The archive above with one weight (or constant) rewritten as ``use_pickle: true`` and a payload that
    creates ``marker`` when unpickled."""
    src = zipfile.ZipFile(io.BytesIO(pt2_bytes()))
    names = src.namelist()
    config_name = next(
        n
        for n in names
        if n.endswith(f"{which}_config.json") or (which == "weights" and "weights_config" in n)
    )
    config = json.loads(src.read(config_name))
    entries = config["config"]
    fqn = next(iter(entries))
    entries[fqn]["use_pickle"] = True
    target = next(n for n in names if n.endswith("/" + entries[fqn]["path_name"]))
    payload = pickle.dumps(_Payload(str(marker)), protocol=2)
    changed = {config_name: json.dumps(config).encode(), target: payload}
    return _rezip(pt2_bytes(), lambda name, data: changed.get(name, data))


@item("pt2_valid", "model", "load_model", expect="load")
def _(root: Path) -> dict[str, Any]:
    return _model_file(root, "tiny.pt2", pt2_bytes())


@item("pt2_use_pickle_payload", "model", "load_model", note="weights entry unpickled: writes a marker")
def _(root: Path) -> dict[str, Any]:
    marker = marker_path(root, "pt2_weights")
    return {**_model_file(root, "payload.pt2", pt2_with_pickle(marker)), "marker": str(marker)}


@item("pt_legacy_pickle_payload", "model", "load_model", note="legacy pickle that writes a marker")
def _(root: Path) -> dict[str, Any]:
    marker = marker_path(root, "legacy_pt")
    data = pickle.dumps({"state_dict": _Payload(str(marker))}, protocol=2)
    return {**_model_file(root, "payload.pt", data), "marker": str(marker)}


@item("pt_zip_pickle_payload", "model", "load_model", note="torch.save zip whose data.pkl writes a marker")
def _(root: Path) -> dict[str, Any]:
    import torch

    marker = marker_path(root, "zip_pt")
    buf = io.BytesIO()
    torch.save({"x": _Payload(str(marker))}, buf)
    return {**_model_file(root, "payload_zip.pt", buf.getvalue()), "marker": str(marker)}


@item("pt_whole_module_untrusted", "model", "load_model", note="pickled nn.Module without trust")
def _(root: Path) -> dict[str, Any]:
    import torch

    buf = io.BytesIO()
    torch.save(_tiny_net(), buf)
    return _model_file(root, "module.pt", buf.getvalue())


@item("pt_nested_dict_200", "model", "load_model", note="a state dict nested 200 levels deep")
def _(root: Path) -> dict[str, Any]:
    import torch

    doc: dict[str, Any] = {"w": torch.zeros(2)}
    for _ in range(200):
        doc = {"state_dict": doc}
    buf = io.BytesIO()
    torch.save(doc, buf)
    return _model_file(root, "nested.pt", buf.getvalue(), _sound_sidecar())


@item(
    "pt_storage_size_lie",
    "model",
    "load_model",
    note="data.pkl says 10^12 elements, the record holds 40 bytes",
)
def _(root: Path) -> dict[str, Any]:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(10)}, buf)

    def lie(name: str, data: bytes) -> bytes:
        if not name.endswith("data.pkl"):
            return data
        return data.replace(b"K\nt", b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00t")  # size 10 -> 10**12 (LONG1)

    return _model_file(root, "storage_lie.pt", _rezip(buf.getvalue(), lie), _sound_sidecar())


@item(
    "pt_deflated_state_dict_bomb",
    "model",
    "load_model",
    isolate=True,
    note="torch.save zip re-deflated: a 1.75 GiB zero record in 8 MB (torch.load inflated it all)",
)
def _(root: Path) -> dict[str, Any]:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(10)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    total = 7 << 28  # 1.75 GiB of float32 zeros: 469,762,048 elements, declared in data.pkl (BININT)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                zf.writestr(info.filename, data.replace(b"K\nt", b"J" + struct.pack("<i", total // 4) + b"t"))
            elif info.filename.split("/")[1:] == ["data", "0"]:
                with zf.open(info.filename, "w") as fh:
                    chunk, left = bytes(8 << 20), total
                    while left > 0:
                        fh.write(chunk[: min(left, len(chunk))])
                        left -= len(chunk)
            else:
                zf.writestr(info.filename, data)
    return _model_file(root, "deflated_sd.pt", out.getvalue(), _sound_sidecar())


@item("torchscript", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_tiny_net()), buf)
    return _model_file(root, "scripted.pt", buf.getvalue())


@item("state_dict_pt_valid", "model", "load_model", expect="load")
def _(root: Path) -> dict[str, Any]:
    import torch

    buf = io.BytesIO()
    torch.save(_sound_state(), buf)
    return _model_file(root, "sound_sd.pt", buf.getvalue(), _sound_sidecar())


def _scaled(root: Path, name: str, fn: Callable[[Any], Any]) -> dict[str, Any]:
    sd = _sound_state()
    sd = {k: fn(v) if v.is_floating_point() and "running_var" not in k else v for k, v in sd.items()}
    return _model_file(root, name, _safetensors(sd), _sound_sidecar())


@item("safetensors_nan_weight", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    sd = _sound_state()
    key = next(k for k, v in sd.items() if v.ndim == 4)
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    return _model_file(root, "nan.safetensors", _safetensors(sd), _sound_sidecar())


@item("safetensors_inf_weight", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    sd = _sound_state()
    key = [k for k, v in sd.items() if v.ndim == 2][-1]  # the classifier: invisible to a zero input?
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("inf")
    return _model_file(root, "inf.safetensors", _safetensors(sd), _sound_sidecar())


@item("safetensors_scaled_1e30", "model", "load_model", note="every weight ×1e30: inf/NaN on a real image")
def _(root: Path) -> dict[str, Any]:
    return _scaled(root, "big.safetensors", lambda v: v * 1e30)


@item("safetensors_truncated", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    data = SOUND.read_bytes()
    return _model_file(root, "trunc.safetensors", data[: len(data) // 2], _sound_sidecar())


@item("safetensors_header_len_2^62", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    data = struct.pack("<Q", 1 << 62) + b"{}" + bytes(64)
    return _model_file(root, "hdr.safetensors", data, _sound_sidecar())


def _st_with_header(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


@item("safetensors_offsets_lie", "model", "load_model", note="tensor claims bytes past the end")
def _(root: Path) -> dict[str, Any]:
    data = _st_with_header(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}, bytes(16)
    )
    return _model_file(root, "offsets.safetensors", data, _sound_sidecar())


@item("safetensors_shape_lie", "model", "load_model", note="shape 10^6×10^6 for 16 bytes")
def _(root: Path) -> dict[str, Any]:
    data = _st_with_header(
        {"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}}, bytes(16)
    )
    return _model_file(root, "shape.safetensors", data, _sound_sidecar())


@item("safetensors_header_nested", "model", "load_model", note="header JSON nested 100000 deep")
def _(root: Path) -> dict[str, Any]:
    raw = b"{" + b'"a":[' * 1 + b"[" * 100000 + b"]" * 100000 + b"]}"
    raw += b" " * (-len(raw) % 8)
    return _model_file(root, "nested.safetensors", struct.pack("<Q", len(raw)) + raw, _sound_sidecar())


@item("safetensors_fp16_valid", "model", "load_model", expect="load")
def _(root: Path) -> dict[str, Any]:
    return _scaled(root, "half.safetensors", lambda v: v.half())


@item("model_random_bytes", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    return _model_file(root, "random.pth", os.urandom(4096))


@item("model_empty", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    return _model_file(root, "empty.pt", b"")


@item("model_directory", "model", "load_model", note="a folder; must not say 'does not exist'")
def _(root: Path) -> dict[str, Any]:
    return _folder(root, "models", "folder.safetensors")


@item("pt2_corrupt_json", "model", "load_model")
def _(root: Path) -> dict[str, Any]:
    data = _rezip(pt2_bytes(), lambda name, data: b"{" * 50000 if name.endswith(".json") else data)
    return _model_file(root, "corrupt.pt2", data)


# =========================================================================================== sidecars


def _sidecar(
    root: Path, name: str, doc: Any = None, *, raw: bytes | None = None, weights: Path = SOUND
) -> dict[str, Any]:
    data = raw if raw is not None else json.dumps(doc).encode()
    path = _write(root / "sidecars" / f"{name}.json", data)
    return {"path": str(weights), "sidecar": str(path)}


def _with(**changes: Any) -> dict[str, Any]:
    """The demo sidecar with keys changed (a value of None removes the key)."""
    doc = _sound_sidecar()
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None or k not in changes}


def _sidecar_item(
    id: str,
    doc_fn: Callable[[], Any],
    *,
    expect: str = "error",
    note: str = "",
    isolate: bool = False,
    weights: Path = SOUND,
) -> None:
    def build(root: Path) -> dict[str, Any]:
        return _sidecar(root, id, doc_fn(), weights=weights)

    item(id, "sidecar", "load_model", expect=expect, note=note, isolate=isolate)(build)


_sidecar_item("sidecar_input_size_100000", lambda: _with(input_size=[100000, 100000]), isolate=True)
_sidecar_item(
    "sidecar_input_size_4096", lambda: _with(input_size=[4096, 4096]), expect="either", isolate=True
)
_sidecar_item("sidecar_input_size_zero", lambda: _with(input_size=[0, 224]))
_sidecar_item("sidecar_input_size_1", lambda: _with(input_size=[1, 1]), expect="either")
_sidecar_item(
    "sidecar_unet_input_8",
    lambda: {**json.loads((DEMO / "models" / "segmentation.json").read_text()), "input_size": [8, 8]},
    expect="either",
    weights=SEGMENTATION,
)
_sidecar_item("sidecar_input_size_float", lambda: _with(input_size=[224.5, 224]))
_sidecar_item("sidecar_width_mult_1000", lambda: _with(arch_kwargs={"width_mult": 1000}), isolate=True)
_sidecar_item("sidecar_width_mult_negative", lambda: _with(arch_kwargs={"width_mult": -1.0}))
_sidecar_item(
    "sidecar_unet_base_100000",
    lambda: {
        **json.loads((DEMO / "models" / "segmentation.json").read_text()),
        "arch_kwargs": {"base": 100000, "depth": 5},
    },
    isolate=True,
    weights=SEGMENTATION,
)
_sidecar_item("sidecar_unknown_key", lambda: _with(learning_rate=0.1))
_sidecar_item(
    "sidecar_checkpoint_path_timm",
    lambda: {**_with(architecture="timm/resnet18"), "arch_kwargs": {"checkpoint_path": "/etc/hostname"}},
)
_sidecar_item(
    "sidecar_checkpoint_path",
    lambda: _with(arch_kwargs={"width_mult": 0.5, "checkpoint_path": "/etc/hostname"}),
)
_sidecar_item(
    "sidecar_weights_download",
    lambda: _with(arch_kwargs={"width_mult": 0.5, "weights": "DEFAULT"}),
    note="would make torchvision download weights",
)
_sidecar_item(
    "sidecar_class_names_1e6", lambda: _with(class_names=[f"c{i}" for i in range(10**6)], num_classes=None)
)
_sidecar_item("sidecar_class_names_not_str", lambda: _with(class_names=[1, 2, 3]))
_sidecar_item("sidecar_mean_nan", lambda: _with(mean=[float("nan")]))
_sidecar_item("sidecar_std_inf", lambda: _with(std=[float("inf")]))
_sidecar_item("sidecar_std_1e-30", lambda: _with(std=[1e-30]), note="positive but absurd: x/1e-30 overflows")
_sidecar_item("sidecar_mean_1e300", lambda: _with(mean=[1e300]))
_sidecar_item("sidecar_mean_wrong_length", lambda: _with(mean=[0.1, 0.2, 0.3, 0.4]))
_sidecar_item("sidecar_num_classes_1e9", lambda: _with(num_classes=10**9, class_names=None))
_sidecar_item("sidecar_in_channels_1e6", lambda: _with(in_channels=10**6))
_sidecar_item("sidecar_architecture_path", lambda: _with(architecture="../../etc/passwd"))
_sidecar_item("sidecar_task_bogus", lambda: _with(task="detection"))
_sidecar_item("sidecar_garbage_class_missing", lambda: _with(garbage_class="nope"))
_sidecar_item("sidecar_array", lambda: [1, 2, 3])
_sidecar_item("sidecar_valid", _sound_sidecar, expect="load")


def _raw_sidecar_item(id: str, make: Callable[[], bytes], *, expect: str = "error", note: str = "") -> None:
    def build(root: Path) -> dict[str, Any]:
        return _sidecar(root, id, raw=make())

    item(id, "sidecar", "load_model", expect=expect, note=note)(build)


_raw_sidecar_item(
    "sidecar_nested_100000",
    lambda: b'{"architecture": "mobilenet_v3_small", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}",
)
_raw_sidecar_item(
    "sidecar_nested_arch_kwargs",
    lambda: (
        b'{"architecture": "mobilenet_v3_small", "arch_kwargs": '
        + b'{"a":' * 50000
        + b"1"
        + b"}" * 50000
        + b"}"
    ),
)
_raw_sidecar_item(
    "sidecar_5001_digits",
    lambda: json.dumps(_sound_sidecar())[:-1].encode() + b', "num_classes": ' + b"9" * 5001 + b"}",
)
_raw_sidecar_item(
    "sidecar_float_1e400",
    lambda: json.dumps(_sound_sidecar())[:-1].encode() + b', "std": [1e400]}',
    note="parses as inf",
)
_raw_sidecar_item(
    "sidecar_NaN_literal", lambda: json.dumps(_sound_sidecar())[:-1].encode() + b', "mean": [NaN]}'
)
_raw_sidecar_item("sidecar_not_utf8", lambda: b'{"architecture": "\xff\xfe"}')
_raw_sidecar_item("sidecar_truncated", lambda: json.dumps(_sound_sidecar()).encode()[:40])
_raw_sidecar_item(
    "sidecar_20MB_whitespace",
    lambda: b" " * (20 << 20) + json.dumps(_sound_sidecar()).encode(),
    expect="either",
)


# =========================================================================================== bundles


def _bundle_parts() -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np

    with np.load(BUNDLE.with_suffix(".npz"), allow_pickle=False) as data:
        arrays = {k: np.asarray(data[k]) for k in data.files}
    return arrays, json.loads(BUNDLE.with_suffix(".json").read_text())


def _npz(arrays: dict[str, Any]) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _bundle(root: Path, name: str, npz: bytes, manifest: bytes) -> dict[str, Any]:
    stem = root / "bundles" / name / "bundle"
    _write(stem.with_suffix(".npz"), npz)
    _write(stem.with_suffix(".json"), manifest)
    return {"path": str(stem)}


def _bundle_item(
    id: str,
    make: Callable[[Path], tuple[bytes, bytes]],
    *,
    expect: str = "error",
    note: str = "",
    marker: str | None = None,
) -> None:
    def build(root: Path) -> dict[str, Any]:
        npz, manifest = make(root)
        spec = _bundle(root, id, npz, manifest)
        if marker:
            spec["marker"] = str(marker_path(root, marker))
        return spec

    item(id, "bundle", "load_bundle", expect=expect, note=note, isolate=True)(build)


def _valid_bundle(root: Path) -> tuple[bytes, bytes]:
    return BUNDLE.with_suffix(".npz").read_bytes(), BUNDLE.with_suffix(".json").read_bytes()


def _manifest_with(**changes: Any) -> Callable[[Path], tuple[bytes, bytes]]:
    def make(root: Path) -> tuple[bytes, bytes]:
        arrays, doc = _bundle_parts()
        doc.update(changes)
        return _npz(arrays), json.dumps(doc).encode()

    return make


def _arrays_with(**changes: Any) -> Callable[[Path], tuple[bytes, bytes]]:
    def make(root: Path) -> tuple[bytes, bytes]:
        arrays, doc = _bundle_parts()
        arrays.update({k: v() if callable(v) else v for k, v in changes.items()})
        return _npz(arrays), json.dumps(doc).encode()

    return make


def _raw_manifest(tail: bytes) -> Callable[[Path], tuple[bytes, bytes]]:
    def make(root: Path) -> tuple[bytes, bytes]:
        arrays, doc = _bundle_parts()
        return _npz(arrays), json.dumps(doc).encode()[:-1] + tail

    return make


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A .npy (version 1.0) header declaring ``shape`` of ``descr``, padded to 64 bytes: the data follows."""
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    text = repr(header).encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy member whose header declares ``shape`` float64 and which holds 64 bytes of data."""
    return _npy_header("<f8", shape) + bytes(64)


def _npz_replacing(
    member: str, data: bytes, *, deflate: bool = False
) -> Callable[[Path], tuple[bytes, bytes]]:
    def make(root: Path) -> tuple[bytes, bytes]:
        npz = _rezip(
            BUNDLE.with_suffix(".npz").read_bytes(),
            lambda name, old: data if name == member else old,
            method=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED,
        )
        return npz, BUNDLE.with_suffix(".json").read_bytes()

    return make


def _object_array_payload(root: Path) -> tuple[bytes, bytes]:
    payload = pickle.dumps([_Payload(str(marker_path(root, "bundle_npz")))], protocol=2)
    member = _npy_header("|O", (1,)) + payload
    return _npz_replacing("references.npy", member)(root)


def _zeros_npy_bomb(root: Path) -> tuple[bytes, bytes]:
    """maps.npy declaring (32768, 64, 64) float64 = 1 GiB of zeros, deflated to ~1 MB."""
    src = zipfile.ZipFile(io.BytesIO(BUNDLE.with_suffix(".npz").read_bytes()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for info in src.infolist():
            if info.filename != "maps.npy":
                out.writestr(info.filename, src.read(info.filename))
                continue
            with out.open("maps.npy", "w") as fh:
                fh.write(_npy_header("<f8", (32768, 64, 64)))
                chunk = bytes(8 << 20)
                for _ in range(32768 * 64 * 64 * 8 // len(chunk)):
                    fh.write(chunk)
    return buf.getvalue(), BUNDLE.with_suffix(".json").read_bytes()


_bundle_item("bundle_valid", _valid_bundle, expect="load")
_bundle_item("bundle_schema_999", _manifest_with(schema_version=999))
_bundle_item("bundle_manifest_not_json", lambda root: (_valid_bundle(root)[0], b"\xff\xfe not json"))
_bundle_item("bundle_manifest_nested", lambda root: (_valid_bundle(root)[0], b"[" * 100000 + b"]" * 100000))
_bundle_item("bundle_manifest_5001_digits", _raw_manifest(b', "threshold": ' + b"7" * 5001 + b"}"))
_bundle_item("bundle_class_names_1e6", _manifest_with(class_names=[f"c{i}" for i in range(10**6)]))
_bundle_item("bundle_threshold_nan", _raw_manifest(b', "threshold": NaN}'))
_bundle_item(
    "bundle_references_nan",
    _arrays_with(references=lambda: __import__("numpy").full((3, 64, 64), float("nan"), "float32")),
)
_bundle_item(
    "bundle_references_wrong_shape",
    _arrays_with(references=lambda: __import__("numpy").zeros((2, 7), "float32")),
)
_bundle_item(
    "bundle_npz_object_payload",
    _object_array_payload,
    marker="bundle_npz",
    note="references.npy holds a pickled object array that writes a marker",
)
_bundle_item(
    "bundle_npz_header_shape_lie",
    _npz_replacing("maps.npy", _npy_header_only((100000, 100000))),
    note="maps.npy declares 100000² float64 (80 GB), holds 64 bytes",
)
_bundle_item(
    "bundle_npz_zeros_1GiB", _zeros_npy_bomb, expect="either", note="maps.npy: 1 GiB of zeros, deflated"
)
_bundle_item("bundle_npz_truncated", lambda root: (_valid_bundle(root)[0][:5000], _valid_bundle(root)[1]))


# =========================================================================================== metrics


def _npy(root: Path, name: str, arr: Any) -> str:
    import numpy as np

    path = root / "arrays" / f"{name}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr, allow_pickle=False)
    return str(path)


def _metric_item(
    id: str,
    maps: Callable[[], Any],
    refs: Callable[[], Any] | None = None,
    *,
    expect: str = "error",
    note: str = "",
    isolate: bool = False,
    **kwargs: Any,
) -> None:
    def build(root: Path) -> dict[str, Any]:
        import numpy as np

        m = maps()
        r = refs() if refs is not None else np.random.default_rng(1).random((1, 16, 16))
        return {
            "maps": _npy(root, id + "_maps", m) if isinstance(m, np.ndarray) else m,
            "refs": _npy(root, id + "_refs", r) if isinstance(r, np.ndarray) else r,
            "kwargs": kwargs,
        }

    item(id, "metrics", "compute_metrics", expect=expect, note=note, isolate=isolate)(build)


def _rand(*shape: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).random(shape)


def _with_value(value: float) -> Callable[[], Any]:
    def make() -> Any:
        m = _rand(2, 16, 16)
        m[0, 3, 3] = value
        return m

    return make


_metric_item("metrics_valid", lambda: _rand(2, 16, 16), expect="load")
_metric_item("metrics_empty_batch", lambda: _rand(0, 16, 16), expect="either", note="N = 0")
_metric_item("metrics_0x0", lambda: _rand(1, 0, 0))
_metric_item("metrics_1x1", lambda: _rand(1, 1, 1), expect="either")
_metric_item("metrics_size_100000", lambda: _rand(1, 16, 16), size=[100000, 100000], isolate=True)
_metric_item("metrics_size_zero", lambda: _rand(1, 16, 16), size=[0, 0])
_metric_item("metrics_size_negative", lambda: _rand(1, 16, 16), size=[-4, 16])
_metric_item("metrics_strings", lambda: ["a", "b"])
_metric_item("metrics_string_array", lambda: __import__("numpy").array([["a", "b"], ["c", "d"]]))
_metric_item("metrics_nan_map", _with_value(float("nan")), expect="nan_or_error")
_metric_item("metrics_inf_map", _with_value(float("inf")), expect="nan_or_error")
_metric_item(
    "metrics_nan_ref",
    lambda: _rand(1, 16, 16),
    refs=lambda: __import__("numpy").full((1, 16, 16), float("nan")),
    expect="nan_or_error",
)
_metric_item("metrics_threshold_2", lambda: _rand(2, 16, 16), threshold=2.0)
_metric_item("metrics_threshold_nan", lambda: _rand(2, 16, 16), threshold=float("nan"))
_metric_item("metrics_threshold_negative", lambda: _rand(2, 16, 16), threshold=-0.5)
_metric_item("metrics_threshold_string", lambda: _rand(2, 16, 16), threshold="half")
_metric_item("metrics_1d", lambda: _rand(16))
_metric_item("metrics_4d", lambda: _rand(1, 1, 16, 16))
_metric_item("metrics_batch_mismatch", lambda: _rand(3, 16, 16), refs=lambda: _rand(2, 16, 16))
_metric_item("metrics_complex", lambda: _rand(1, 16, 16) + 1j)
_metric_item("metrics_unknown_name", lambda: _rand(1, 16, 16), names=["iou", "nope"])
_metric_item("metrics_bad_option", lambda: _rand(1, 16, 16), options={"wasserstein": {"bogus": 1}})
_metric_item(
    "metrics_n_directions_1e9",
    lambda: _rand(1, 16, 16),
    options={"wasserstein": {"n_directions": 10**9}},
    isolate=True,
)
_metric_item(
    "metrics_otsu_inf_ref",
    lambda: __import__("numpy").zeros((1, 1), "float32"),
    refs=lambda: __import__("numpy").array([[float("inf"), 0.0]], "float32"),
    threshold="otsu",
    expect="nan_or_error",
    note="found by hypothesis",
)
_metric_item(
    "metrics_constant_wasserstein_reason",
    lambda: __import__("numpy").zeros((1, 1), "float32"),
    refs=lambda: __import__("numpy").zeros((1, 1), "float32"),
    threshold="otsu",
    size=[11, 33],
    expect="either",
    note="every NaN needs its reason (found by hypothesis)",
)


def _peaked_map() -> Any:
    import numpy as np

    m = np.full((1, 11, 9), 0.0049, np.float32)
    m[0, 0, 1], m[0, 0, 2] = 0.0, 1.0
    return m


_metric_item(
    "metrics_cosine_self_float32",
    _peaked_map,
    refs=_peaked_map,
    size=[174, 256],
    expect="load",
    note="a float32 map against itself: cosine must stay within [-1, 1] (found by hypothesis)",
)
_metric_item("metrics_bool_maps", lambda: _rand(1, 16, 16) > 0.5, expect="either")


# =========================================================================================== CAMs


def _cam_item(
    id: str,
    x: Callable[[], Any],
    *,
    expect: str = "error",
    note: str = "",
    isolate: bool = False,
    **kwargs: Any,
) -> None:
    def build(root: Path) -> dict[str, Any]:
        import numpy as np

        arr = x()
        return {
            "model": str(SOUND),
            "x": _npy(root, id + "_x", arr) if isinstance(arr, np.ndarray) else arr,
            "kwargs": kwargs,
        }

    item(id, "cams", "compute_cams", expect=expect, note=note, isolate=isolate)(build)


def _x(*shape: int, value: float | None = None) -> Callable[[], Any]:
    def make() -> Any:
        import numpy as np

        arr = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        if value is not None and arr.size:
            arr.reshape(-1)[0] = value
        return arr

    return make


_cam_item("cams_valid", _x(2, 1, 224, 224), expect="load", methods=["gradcam", "layercam"])
_cam_item("cams_empty_batch", _x(0, 1, 224, 224))
_cam_item("cams_wrong_channels", _x(1, 3, 224, 224))
_cam_item("cams_3d", _x(1, 224, 224))
_cam_item("cams_nan_input", _x(1, 1, 224, 224, value=float("nan")))
_cam_item("cams_inf_input", _x(1, 1, 224, 224, value=float("inf")))
_cam_item("cams_tiny_input", _x(1, 1, 8, 8), expect="either")
_cam_item("cams_2048_input", _x(1, 1, 2048, 2048), expect="either", isolate=True)
_cam_item("cams_bad_layer", _x(1, 1, 224, 224), layers=["no.such.layer"])
_cam_item("cams_linear_layer", _x(1, 1, 224, 224), layers=["classifier.3"])
_cam_item("cams_target_99", _x(1, 1, 224, 224), target=99)
_cam_item("cams_target_negative", _x(1, 1, 224, 224), target=-1)
_cam_item("cams_target_string", _x(1, 1, 224, 224), target="nodule?")
_cam_item("cams_unknown_method", _x(1, 1, 224, 224), methods=["nope"])
_cam_item("cams_no_methods", _x(1, 1, 224, 224), methods=[], expect="either")
_cam_item("cams_int_input", lambda: __import__("numpy").zeros((1, 1, 64, 64), dtype="int64"), expect="either")


@item(
    "cams_threads_shared_model",
    "cams",
    "cams_threads",
    expect="load",
    timeout_s=120.0,
    note="4 threads × 3 calls on one model vs the same calls in sequence",
)
def _(root: Path) -> dict[str, Any]:
    return {"model": str(SOUND), "images": [str(p) for p in GOOD_PNGS]}


# ================================================================================ dashboard model upload


def _model_upload_item(id: str, source_id: str) -> None:
    source = next(i for i in ITEMS if i.id == source_id)

    def build(root: Path) -> dict[str, Any]:
        spec = source.build(root)
        return {**spec, "upload": True}

    item(id, "model", "upload_model", expect=source.expect, note=f"dashboard upload of {source_id}")(build)


UPLOADED: tuple[str, ...] = ("pt2_use_pickle_payload", "pt_legacy_pickle_payload", "sidecar_nested_100000")
UPLOADED += ("sidecar_5001_digits", "sidecar_NaN_literal", "sidecar_unknown_key", "sidecar_valid")
for _source in UPLOADED:
    _model_upload_item(f"upload_{_source}", _source)


# =========================================================================================== CLI


def mixed_folder(root: Path) -> tuple[Path, int]:
    """A folder of two good demo images and hostile ones; returns it and the number of images in it."""
    folder = root / "cli" / "mixed"
    folder.mkdir(parents=True, exist_ok=True)
    for p in GOOD_PNGS[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    bad = {
        "palette.dcm": _dicom_data(_palette),
        "ww0.dcm": _dicom_data(WindowCenter=2048, WindowWidth=0),
        "frames1a.dcm": _frames_1a(),
        "truncated.png": GOOD_PNGS[2].read_bytes()[:2000],
        "empty.png": b"",
        "notes.png": b"not an image",
        "huge_header.png": png_bytes(100000, 100000, rows=2),
        "nested.dcm": struct.pack("<HHI", 0x0008, 0x0060, 2)
        + b"CR"
        + (struct.pack("<HHI", 0x0040, 0x0275, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
        * 3000,
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return folder, 2 + len(bad)


def labelled_folder(root: Path) -> tuple[Path, int]:
    """Class subfolders with two good demo images each and hostile files among them; (folder, n good)."""
    folder = root / "cli" / "labelled"
    mixed, _ = mixed_folder(root)
    refs = sorted((DEMO / "images" / "reference").glob("*.png"))
    n_good = 0
    for cls in ("normal", "nodule", "effusion"):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for p in [r for r in refs if r.stem.endswith(cls)][:2]:
            (folder / cls / p.name).write_bytes(p.read_bytes())
            n_good += 1
    for k, bad in enumerate(sorted(p for p in mixed.iterdir() if not p.name.startswith("00"))):
        cls = ("normal", "nodule", "effusion")[k % 3]
        (folder / cls / bad.name).write_bytes(bad.read_bytes())
    return folder, n_good


def _cli(root: Path, id: str, argv: list[str], **extra: Any) -> dict[str, Any]:
    work = root / "work" / id
    work.mkdir(parents=True, exist_ok=True)
    return {"argv": argv, "cwd": str(work), **extra}


def _cli_item(
    id: str,
    make: Callable[[Path, Path], dict[str, Any]],
    *,
    op: str = "cli",
    expect: str = "error",
    note: str = "",
    timeout_s: float = 90.0,
    isolate: bool = False,
) -> None:
    def build(root: Path) -> dict[str, Any]:
        work = root / "work" / id
        work.mkdir(parents=True, exist_ok=True)
        return {"cwd": str(work), "out": str(work / "out"), **make(root, work)}

    item(id, "cli", op, expect=expect, note=note, timeout_s=timeout_s, isolate=isolate)(build)


def _model_args(root: Path, make: Callable[[Path], dict[str, Any]]) -> list[str]:
    spec = make(root)
    return [spec["path"], *(["--sidecar", spec["sidecar"]] if "sidecar" in spec else [])]


def _layers_item(id: str, model_item: str, *, expect: str = "error", op: str = "cli") -> None:
    source = next(i for i in ITEMS if i.id == model_item)

    def make(root: Path, work: Path) -> dict[str, Any]:
        spec = source.build(root)
        argv = [
            "layers",
            spec["path"],
            *(["--sidecar", spec["sidecar"]] if "sidecar" in spec else []),
            "--json",
        ]
        keep: dict[str, Any] = {k: spec[k] for k in ("marker", "not_in_message") if k in spec}
        return {"argv": argv, **keep}

    _cli_item(id, make, op=op, expect=expect, note=f"layers on {model_item}")


_layers_item("cli_layers_valid", "sidecar_valid", expect="load")
_layers_item("cli_layers_pt2_payload", "pt2_use_pickle_payload")
_layers_item("cli_proc_layers_pt2_payload", "pt2_use_pickle_payload", op="cli_proc")
_layers_item("cli_layers_legacy_payload", "pt_legacy_pickle_payload")
_layers_item("cli_layers_torchscript", "torchscript")
_layers_item("cli_layers_scaled_1e30", "safetensors_scaled_1e30")
_layers_item("cli_layers_nested_sidecar", "sidecar_nested_100000")
_layers_item("cli_layers_5001_digits", "sidecar_5001_digits")
_layers_item("cli_layers_checkpoint_path", "sidecar_checkpoint_path_timm")
_layers_item("cli_layers_class_names_1e6", "sidecar_class_names_1e6")
_layers_item("cli_layers_weights_download", "sidecar_weights_download")
_layers_item("cli_layers_directory", "model_directory")


def _cam_cli(strict: bool) -> Callable[[Path, Path], dict[str, Any]]:
    def make(root: Path, work: Path) -> dict[str, Any]:
        folder, n = mixed_folder(root)
        argv = ["cam", str(SOUND), str(folder), "-o", str(work / "out"), "-q", "--no-overlays"]
        return {"argv": argv + (["--strict"] if strict else []), "n_images": n, "n_good": 2}

    return make


_cli_item("cli_cam_mixed_folder", _cam_cli(False), expect="rows", note="error rows for every bad image")
_cli_item("cli_cam_mixed_folder_strict", _cam_cli(True), expect="error")


def _verify_cli(root: Path, work: Path) -> dict[str, Any]:
    folder, n = mixed_folder(root)
    argv = [
        "verify",
        str(SOUND),
        str(folder),
        "--bundle",
        str(BUNDLE),
        "-q",
        "--json",
        str(work / "out" / "result.json"),
        "--csv",
        str(work / "out" / "table.csv"),
    ]
    return {"argv": argv, "n_images": n, "n_good": 2}


def _verify_bundle_cli(bundle_item: str) -> Callable[[Path, Path], dict[str, Any]]:
    source = next(i for i in ITEMS if i.id == bundle_item)

    def make(root: Path, work: Path) -> dict[str, Any]:
        spec = source.build(root)
        argv = ["verify", str(SOUND), str(GOOD_PNGS[0]), "--bundle", spec["path"], "-q"]
        return {"argv": argv, **({"marker": spec["marker"]} if "marker" in spec else {})}

    return make


def _reference_build_cli(root: Path, work: Path) -> dict[str, Any]:
    folder, _ = labelled_folder(root)
    return {"argv": ["reference", "build", str(SOUND), str(folder), "-o", str(work / "out" / "bundle"), "-q"]}


def _consistency_cli(root: Path, work: Path) -> dict[str, Any]:
    folder, _ = labelled_folder(root)
    payload = next(i for i in ITEMS if i.id == "pt2_use_pickle_payload").build(root)
    argv = ["consistency", payload["path"], str(SOUND), "--data", str(folder), "-q"]
    return {"argv": argv, "marker": payload["marker"]}


def _consistency_mixed_cli(root: Path, work: Path) -> dict[str, Any]:
    folder, _ = labelled_folder(root)
    ckpts = sorted((DEMO / "checkpoints").glob("*.safetensors"))[:2]
    argv = [
        "consistency",
        *map(str, ckpts),
        "--data",
        str(folder),
        "-q",
        "--json",
        str(work / "out" / "c.json"),
    ]
    return {"argv": argv}


_cli_item(
    "cli_reference_build_labelled_mixed",
    _reference_build_cli,
    expect="load",
    note="reference build on class folders with hostile files among the images",
)
_cli_item("cli_consistency_payload_checkpoint", _consistency_cli, note="a .pt2 pickle payload as checkpoint")
_cli_item(
    "cli_consistency_labelled_mixed",
    _consistency_mixed_cli,
    expect="load",
    timeout_s=180.0,
    note="two checkpoints on class folders with hostile files",
)
_cli_item("cli_verify_bundle_nested", _verify_bundle_cli("bundle_manifest_nested"))
_cli_item("cli_verify_bundle_shape_lie", _verify_bundle_cli("bundle_npz_header_shape_lie"))
_cli_item("cli_verify_bundle_payload", _verify_bundle_cli("bundle_npz_object_payload"))
_cli_item("cli_verify_mixed_folder", _verify_cli, expect="verify_rows", note="errors listed in JSON and CSV")


def _verify_npy_masks_cli(root: Path, work: Path) -> dict[str, Any]:
    """Three good images; the finding mask of the first is an object array, of the second a header
    declaring 8 GB of float64 over 1 KB (before: ``verify`` exit 1, "ValueError: Object arrays ...")."""
    import numpy as np

    folder, ann = root / "cli" / "npy_masks" / "images", root / "cli" / "npy_masks" / "lesions"
    folder.mkdir(parents=True, exist_ok=True)
    ann.mkdir(parents=True, exist_ok=True)
    for p in GOOD_PNGS[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    objects = io.BytesIO()
    np.save(objects, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (ann / f"{GOOD_PNGS[0].stem}_lesion.npy").write_bytes(objects.getvalue())
    lie = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        lie, {"descr": "<f8", "fortran_order": False, "shape": (32768, 32768)}
    )
    (ann / f"{GOOD_PNGS[1].stem}_lesion.npy").write_bytes(lie.getvalue() + bytes(1024))
    out = work / "out"
    argv = ["verify", str(SOUND), str(folder), "--bundle", str(BUNDLE), "--annotations", str(ann), "-q",
            "--json", str(out / "result.json"), "--csv", str(out / "table.csv")]  # fmt: skip
    return {"argv": argv, "n_images": 3, "n_good": 1}


_cli_item(
    "cli_verify_hostile_npy_masks",
    _verify_npy_masks_cli,
    expect="verify_rows",
    note="an object-array and a lying .npy finding mask: each its image's error row",
)


def _cam_model_cli(model_item: str) -> Callable[[Path, Path], dict[str, Any]]:
    source = next(i for i in ITEMS if i.id == model_item)

    def make(root: Path, work: Path) -> dict[str, Any]:
        spec = source.build(root)
        argv = ["cam", *_model_args(root, lambda r: spec), str(GOOD_PNGS[0]), "-o", str(work / "out"), "-q"]
        return {"argv": argv, **({"marker": spec["marker"]} if "marker" in spec else {})}

    return make


_cli_item("cli_cam_sidecar_mean_nan", _cam_model_cli("sidecar_mean_nan"))
_cli_item("cli_cam_input_size_100000", _cam_model_cli("sidecar_input_size_100000"), isolate=True)
_cli_item("cli_cam_zip_payload", _cam_model_cli("pt_zip_pickle_payload"))


# =========================================================================================== build


def build(root: Path, items: list[Item] | None = None) -> dict[str, dict[str, Any]]:
    """Write every item's files under ``root``; returns ``{id: op arguments}``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "markers").mkdir(exist_ok=True)
    specs: dict[str, dict[str, Any]] = {}
    for it in items or ITEMS:
        specs[it.id] = it.build(root)
    return specs


def run_specs(root: Path, items: list[Item] | None = None) -> list[dict[str, Any]]:
    """Build the items (default: all) under ``root``; returns what :func:`tests.fuzz.runner.run_corpus` takes,
    one spec per item: its id, category, op, expectation, time limit and op arguments."""
    chosen = items or ITEMS
    args = build(root, chosen)
    return [
        {
            "id": i.id,
            "category": i.category,
            "op": i.op,
            "expect": i.expect,
            "timeout_s": i.timeout_s,
            "args": args[i.id],
        }
        for i in chosen
    ]
