"""Hostile images and uploads (issue #14 items 2, 4, 5): the budget read from headers before decoding, per
image and across one upload's archives; typed errors for broken DICOM tags and refused formats.

Expected costs are derived by hand from the formula in verification.io.budget (raw = W·H·S·B; peak = 2·raw +
W·H·S_out·(10, +16 for DICOM); retained = W·H·S_out·5). Memory-heavy checks run in a child process whose
address space is capped (tests/io/memcap.py)."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from tests.builders import dicom_bytes, zip_bytes
from tests.io.memcap import run_capped_many
from verification.errors import ImageLoadError, InputTooLargeError
from verification.io.budget import Budget, ImageCost, ResourceLimits
from verification.io.images import image_cost, load_image
from verification.uploads import expand_uploads

GiB = 1 << 30


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int, *, depth: int = 8, colour: int = 2) -> bytes:
    """A real, decodable PNG of zeros (filter byte 0 per row) compressed row by row: small file, big image."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\x00" + b"\x00" * (width * channels * depth // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def tiff_with_declared_size(width: int, height: int, samples: int) -> bytes:
    """A float64 TIFF written at 4×4 with ``samples`` samples per pixel, whose header is then patched to
    declare ``width``×``height``: the header lies, the budget must refuse before any decode."""
    buf = io.BytesIO()
    tifffile.imwrite(
        buf, np.zeros((4, 4, samples), np.float64), photometric="minisblack", planarconfig="contig"
    )
    data = bytearray(buf.getvalue())
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(count):
        pos = ifd + 2 + 12 * i
        tag, typ = struct.unpack("<HH", data[pos : pos + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[pos + 8 : pos + 12] = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
    return bytes(data)


# --- costs from headers, derived by hand --------------------------------------------------------------------


def test_png_header_costs_count_bit_depth_and_alpha() -> None:
    rgb = image_cost(png_bomb(8192, 8192), "rgb.png")
    assert (rgb.width, rgb.height, rgb.samples, rgb.bytes_per_sample) == (8192, 8192, 3, 1)
    assert rgb.raw_bytes == 8192 * 8192 * 3
    assert rgb.peak_bytes == 2 * 8192 * 8192 * 3 + 8192 * 8192 * 3 * 10  # 2.8 GB > 1 GiB
    rgba16 = image_cost(png_bomb(64, 32, depth=16, colour=6), "rgba16.png")
    assert (rgba16.samples, rgba16.bytes_per_sample, rgba16.raw_bytes) == (4, 2, 64 * 32 * 8)
    assert rgba16.out_samples == 3  # alpha is dropped after decoding
    assert rgba16.retained_bytes == 64 * 32 * 3 * 5


def test_tiff_and_dicom_header_costs() -> None:
    tif = image_cost(tiff_with_declared_size(1024, 1024, 1000), "cube.tif")
    assert (tif.width, tif.height, tif.samples, tif.bytes_per_sample) == (1024, 1024, 1000, 8)
    assert tif.raw_bytes == 1024 * 1024 * 1000 * 8  # the 7.8 GiB
    dcm = image_cost(dicom_bytes(np.zeros((3, 20, 24), np.uint16), NumberOfFrames=3), "multi.dcm")
    assert (dcm.width, dcm.height, dcm.samples, dcm.bytes_per_sample, dcm.frames) == (24, 20, 1, 2, 3)
    assert dcm.peak_bytes == 2 * 20 * 24 * 2 + 20 * 24 * (10 + 16)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (png_bomb(8192, 8192), "rgb8192.png"),
        (png_bomb(8192, 4096, depth=16, colour=6), "rgba16.png"),
        (tiff_with_declared_size(1024, 1024, 1000), "float64_cube.tif"),
    ],
)
def test_images_over_the_budget_are_refused_before_decoding(data: bytes, name: str) -> None:
    with pytest.raises(InputTooLargeError, match="limit per image") as info:
        load_image(data, name=name)
    assert len(str(info.value)) < 300


def test_budget_is_configurable_and_refuses_at_its_own_limit() -> None:
    data = png_bomb(256, 256)
    cost = image_cost(data, "x.png")
    tight = Budget(ResourceLimits(max_image_bytes=cost.peak_bytes - 1))
    with pytest.raises(InputTooLargeError, match="limit per image"):
        load_image(data, name="x.png", budget=tight)
    assert load_image(
        data, name="x.png", budget=Budget(ResourceLimits(max_image_bytes=cost.peak_bytes))
    ).size == (
        256,
        256,
    )


def test_one_budget_sums_the_decoded_size_of_a_batch() -> None:
    data = png_bomb(200, 200)
    one = image_cost(data, "x.png").retained_bytes
    budget = Budget(ResourceLimits(max_decoded_bytes=3 * one))
    for i in range(3):
        load_image(data, name=f"{i}.png", budget=budget)
    with pytest.raises(InputTooLargeError, match="limit for one upload"):
        load_image(data, name="3.png", budget=budget)


# --- uploads: one budget across archives --------------------------------------------------------------------


def test_zip_of_max_size_pngs_is_refused_before_any_decode() -> None:
    # 24 PNGs of 4096² RGB, each under the per-image limit: together 24 × 240 MiB retained > 2 GiB.
    png = png_bomb(4096, 4096)
    assert image_cost(png, "a.png").peak_bytes <= GiB
    data = zip_bytes({f"set/normal/{i}.png": png for i in range(24)})
    assert len(data) < 2_000_000
    with pytest.raises(InputTooLargeError, match="limit for one upload"):
        expand_uploads([("bomb.zip", data)])
    expand_uploads([("bomb.zip", data)], retain=False)  # streamed (dataset page): each image checked alone


def test_archive_limits_are_summed_across_archives() -> None:
    """Four archives of 300 kB under a 1.2 MB limit for the upload: three fit (reading one briefly takes twice
    its size, so the fourth cannot), whichever archive they come from."""
    entry = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()  # incompressible
    zips = [(f"part{i}.zip", zip_bytes({f"p{i}/x.dcm": entry})) for i in range(4)]
    limits = ResourceLimits(max_archive_bytes=1_200_000)
    budget = Budget(limits)
    with pytest.raises(InputTooLargeError, match="all archives"):
        expand_uploads(zips, budget=budget, retain=False)
    assert budget.archive_bytes == 900_000
    assert len(expand_uploads(zips[:3], retain=False, budget=Budget(limits)).blobs) == 3
    each_alone = [expand_uploads([z], retain=False, budget=Budget(limits)) for z in zips]
    assert all(len(e.blobs) == 1 for e in each_alone)


def test_entry_count_is_summed_across_archives() -> None:
    zips = [(f"z{i}.zip", zip_bytes({f"d{i}/{j}.png": b"x" for j in range(6)})) for i in range(2)]
    with pytest.raises(InputTooLargeError, match="archive entries"):
        expand_uploads(zips, budget=Budget(ResourceLimits(max_archive_entries=10)), retain=False)


def test_declared_bomb_ratio_is_refused_without_inflating() -> None:
    data = zip_bytes({"bomb.png": b"\0" * (64 << 20)})  # 64 MiB of zeros: ratio ~1000
    with pytest.raises(InputTooLargeError, match="zip bomb"):
        expand_uploads([("bomb.zip", data)])


# --- typed errors -------------------------------------------------------------------------------------------


def test_dicom_window_width_zero_is_a_typed_error() -> None:
    data = dicom_bytes(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), WindowCenter=100, WindowWidth=0)
    with pytest.raises(ImageLoadError, match="WindowWidth 0"):
        load_image(data, name="w0.dcm")


def test_palette_dicom_without_lut_is_a_typed_error() -> None:
    data = dicom_bytes(np.zeros((16, 16), np.uint8), photometric="PALETTE COLOR", bits=8)
    with pytest.raises(ImageLoadError, match=r"PALETTE COLOR.*lookup table"):
        load_image(data, name="palette.dcm")


def test_pydicom_bad_vr_file_is_a_typed_error() -> None:
    path = Path(pydicom.data.get_testdata_file("badVR.dcm"))  # NumberOfFrames = '1A'
    with pytest.raises(ImageLoadError, match=r"NumberOfFrames.*'1A'"):
        load_image(path)


def test_directory_path_says_it_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize(("fmt", "kind"), [("GIF", "GIF"), ("BMP", "BMP"), ("WEBP", "WebP")])
def test_gif_bmp_webp_are_refused_naming_the_accepted_formats(fmt: str, kind: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, format=fmt)
    with pytest.raises(
        ImageLoadError, match=rf"a {kind} image; accepted formats are PNG, JPEG, TIFF or DICOM"
    ):
        load_image(buf.getvalue(), name=f"x.{fmt.lower()}")


def test_jpeg_whose_header_declares_a_bomb_is_typed() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    with pytest.raises(InputTooLargeError):
        load_image(bytes(data), name="sof.jpg")


@pytest.mark.parametrize(
    "data", [b"\xff\xd8\xff", b"\xff\xd8\xff\xe0" + bytes(20), b"\x89PNG\r\n\x1a\n", b"II*\x00"]
)
def test_truncated_headers_are_typed(data: bytes) -> None:
    with pytest.raises(ImageLoadError):
        load_image(data, name="truncated")


def test_palette_png_without_plte_is_refused() -> None:
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 3, 0, 0, 0)
    body = zlib.compress(b"".join(b"\x00" + bytes(16) for _ in range(16)))
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    with pytest.raises(ImageLoadError, match="without its palette"):
        load_image(data, name="noplte.png")


# --- peak memory, measured in a capped child ----------------------------------------------------------------


def test_peak_memory_in_a_capped_child(tmp_path: Path) -> None:
    """In one child capped at 256 MiB over its imports: the issue's three image bombs are refused at no cost,
    and an 8-bit RGB PNG just under a 256 MiB per-image budget loads with a measured peak below the estimate
    the budget charged for it (the same formula sets the default 1 GiB limit)."""
    small = 256 << 20
    worst = png_bomb(2600, 2600)  # estimate 2600² × (2·3 + 3·10) = 243 MB ≤ 256 MiB
    cost = image_cost(worst, "worst.png")
    assert cost.peak_bytes <= small
    files = [worst, png_bomb(8192, 8192), png_bomb(8192, 4096, depth=16, colour=6)]
    files.append(tiff_with_declared_size(1024, 1024, 1000))
    paths = []
    for i, blob in enumerate(files):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(blob)
    load = "verification.io.images.load_image(data[{}], name='f{}')"
    bodies = [
        "from verification.io.budget import Budget, ResourceLimits\n"
        f"verification.io.images.load_image(data[0], name='w.png', budget=Budget(ResourceLimits({small})))"
    ] + [load.format(i, i) for i in (1, 2, 3)]
    worst_res, *bombs = run_capped_many(bodies, paths, cap_bytes=small + (64 << 20))
    assert worst_res["outcome"] == "loaded", worst_res
    assert 0 < int(worst_res["peak_bytes"]) <= cost.peak_bytes, worst_res
    for res in bombs:
        assert (res["outcome"], res["error"]) == ("typed", "InputTooLargeError"), res
        assert int(res["peak_bytes"]) < 16 << 20, res


def test_image_cost_type_is_frozen() -> None:
    cost = ImageCost("PNG", 10, 10, 3, 1)
    with pytest.raises(AttributeError):
        cost.width = 5  # type: ignore[misc]


def test_entry_larger_than_one_image_may_be_is_refused_before_inflating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import verification.uploads

    monkeypatch.setattr(verification.uploads, "MAX_ENTRY_BYTES", 4000)
    data = zip_bytes({"a/x.png": bytes(range(256)) * 20})  # 5,120 bytes
    with pytest.raises(InputTooLargeError, match="limit for one file"):
        expand_uploads([("big.zip", data)], retain=False)


def test_unsafe_entry_names_are_skipped_and_listed() -> None:
    data = zip_bytes(
        {"../evil.png": png_bomb(16, 16), "/abs.png": png_bomb(16, 16), "ok/a.png": png_bomb(16, 16)}
    )
    out = expand_uploads([("names.zip", data)])
    assert [b.name for b in out.blobs] == ["ok/a.png"]
    assert out.skipped == ("/abs.png",)  # "../evil.png" is dropped with the hidden entries ("." prefix)


@pytest.mark.parametrize(("tag", "new_type"), [(256, 5), (278, 12), (278, 5), (277, 2), (None, None)])
def test_tiff_tags_of_the_wrong_type_are_typed(tag: int | None, new_type: int | None) -> None:
    """ImageWidth as RATIONAL, RowsPerStrip as DOUBLE/RATIONAL, SamplesPerPixel as ASCII, or the IFD zeroed
    (cases FUZZ's hypothesis run found): tifffile raises TypeError/OverflowError from the header."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.arange(32 * 32, dtype=np.uint16) * 61).reshape(32, 32))
    data = bytearray(buf.getvalue())
    if tag is None:
        data[26:200] = bytes(174)
    else:
        (ifd,) = struct.unpack("<I", data[4:8])
        for k in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
            at = ifd + 2 + 12 * k
            if struct.unpack("<H", data[at : at + 2])[0] == tag:
                struct.pack_into("<H", data, at + 2, new_type)
    with contextlib.suppress(ImageLoadError, InputTooLargeError):
        load_image(bytes(data), name="t.tif")
