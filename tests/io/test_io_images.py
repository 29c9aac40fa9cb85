"""Raster image loading (PNG/JPEG/TIFF, 8/16-bit), every bad input, and to_tensor."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from verification.errors import ImageLoadError, InputTooLargeError, ShapeError
from verification.io.images import MIN_SIDE, as_input, load_image, to_tensor
from verification.io.records import LoadedImage, LoadedModel

RNG = np.random.default_rng(0)


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _pil_bytes(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _tiff(arr: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width×height (8-bit grey) followed by a tiny, wrong IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


# --- round trips --------------------------------------------------------------------------------------------


def test_8bit_grey_png_from_path(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    path = tmp_path / "g.png"
    path.write_bytes(_png(arr))
    img = load_image(path)
    assert isinstance(img, LoadedImage)
    assert img.pixels.shape == (20, 30)
    assert img.pixels.dtype == np.float32
    np.testing.assert_array_equal(img.pixels * 255, arr.astype(np.float32))
    np.testing.assert_array_equal(img.display, arr)
    assert img.name == "g.png"
    assert img.source_format == "PNG"
    assert img.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert img.size == (20, 30)


KNOWN_16 = np.array([[0, 1, 255, 256, 4095, 4096, 32768, 65535]] * 8, dtype=np.uint16)


def test_16bit_png_keeps_every_value() -> None:
    img = load_image(_png(KNOWN_16), name="g16.png")
    assert img.metadata["bit_depth"] == 16
    np.testing.assert_array_equal(np.round(img.pixels.astype(np.float64) * 65535), KNOWN_16)
    assert img.pixels[0, 2] != img.pixels[0, 3]  # 255 and 256 stay distinct: no reduction to 8 bits


def test_16bit_tiff_keeps_every_value() -> None:
    img = load_image(_tiff(KNOWN_16), name="g16.tif")
    assert img.source_format == "TIFF"
    np.testing.assert_array_equal(np.round(img.pixels.astype(np.float64) * 65535), KNOWN_16)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16bit_colour_keeps_every_value(fmt: str) -> None:
    rgb = RNG.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    if fmt == "png":
        ok, enc = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV writes BGR
        assert ok
        data = enc.tobytes()
    else:
        data = _tiff(rgb, photometric="rgb")
    img = load_image(data, name=f"c16.{fmt}")
    assert img.pixels.shape == (12, 10, 3)
    np.testing.assert_array_equal(np.round(img.pixels.astype(np.float64) * 65535), rgb)


def test_multipage_tiff_uses_first_page() -> None:
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        for v in (10, 20, 30):
            tif.write(np.full((16, 16), v, np.uint8), photometric="minisblack")
    img = load_image(buf.getvalue(), name="stack.tif")
    assert np.all(img.pixels * 255 == 10)
    assert any("3 pages" in n for n in img.notices)


def test_float_tiff_outside_unit_range_is_rescaled_and_nan_refused() -> None:
    arr = np.linspace(-100, 300, 16 * 16, dtype=np.float32).reshape(16, 16)
    img = load_image(_tiff(arr), name="f.tif")
    np.testing.assert_allclose(img.pixels, (arr + 100) / 400, atol=1e-6)
    assert any("rescaled" in n for n in img.notices)
    arr[3, 3] = np.nan
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(_tiff(arr), name="nan.tif")


def test_jpeg_colour_and_grey() -> None:
    yy, xx = np.mgrid[0:32, 0:32]
    rgb = np.stack([xx * 8, yy * 8, (xx + yy) * 4], axis=-1).astype(np.uint8)
    img = load_image(_pil_bytes(Image.fromarray(rgb), "JPEG", quality=95), name="c.jpg")
    assert img.pixels.shape == (32, 32, 3)
    assert np.abs(img.pixels * 255 - rgb).mean() < 3  # JPEG is lossy; a smooth image survives closely
    grey = load_image(_pil_bytes(Image.fromarray(rgb[..., 0]), "JPEG", quality=95), name="g.jpg")
    assert grey.pixels.shape == (32, 32)


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((16, 32), np.uint8)
    arr[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img = load_image(_pil_bytes(Image.fromarray(arr), "JPEG", quality=100, exif=exif), name="photo.jpg")
    assert img.pixels.shape == (32, 16)
    assert img.pixels[0, -1] > 0.5  # the top-left corner went to the top-right
    assert any("EXIF" in n for n in img.notices)


def test_rgb_with_identical_channels_becomes_grey() -> None:
    g = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    img = load_image(_png(np.stack([g, g, g], axis=-1)), name="g3.png")
    assert img.pixels.shape == (16, 16)
    np.testing.assert_array_equal(img.pixels * 255, g)


def test_rgba_drops_alpha_with_notice() -> None:
    rgba = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    img = load_image(_png(rgba), name="a.png")
    np.testing.assert_array_equal(img.pixels * 255, rgba[..., :3])
    assert any("alpha" in n for n in img.notices)
    la = load_image(_pil_bytes(Image.fromarray(rgba[..., :2].copy(), mode="LA"), "PNG"), name="la.png")
    np.testing.assert_array_equal(la.pixels * 255, rgba[..., 0])


def test_palette_image_is_converted_to_its_colours() -> None:
    idx = (np.arange(16 * 16).reshape(16, 16) % 3).astype(np.uint8)
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    img = load_image(_pil_bytes(pal, "PNG"), name="p.png")
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(img.pixels, colours[idx])
    assert any("palette" in n for n in img.notices)


# --- bad inputs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(1, 1), (MIN_SIDE - 1, 100), (100, 2)])
def test_tiny_images_are_refused(h: int, w: int) -> None:
    with pytest.raises(ImageLoadError, match=f"only {w}×{h} pixels"):
        load_image(_png(np.zeros((h, w), np.uint8)), name="tiny.png")


def test_min_side_is_accepted() -> None:
    assert load_image(_png(np.zeros((MIN_SIDE, MIN_SIDE), np.uint8))).size == (MIN_SIDE, MIN_SIDE)


def test_non_image_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "report.png"
    path.write_bytes(b"%PDF-1.4 this is a document, not an image\n" * 20)
    with pytest.raises(ImageLoadError, match="renamed"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
def test_truncated_files(fmt: str) -> None:
    arr = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
    data = _tiff(arr) if fmt == "tiff" else _pil_bytes(Image.fromarray(arr), fmt.upper())
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(data[: len(data) // 2], name=f"cut.{fmt}")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"", name="e.png")
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 100 000² pixels declared over a 16-byte payload: PIL's bomb guard and ours both stop it at the header
    with pytest.raises(InputTooLargeError):
        load_image(_png_header_only(100_000, 100_000), name="bomb.png")
    # below PIL's guard but above ours: refused from the header; decoding would fail on the bogus IDAT instead
    with pytest.raises(InputTooLargeError, match=r"5000×4000 = 20,000,000 pixels"):
        load_image(_png_header_only(5000, 4000), name="big.png", max_pixels=1_000_000)


def test_pixel_limit_applies_to_tiff_from_its_header() -> None:
    data = _tiff(np.zeros((300, 400), np.uint8))
    with pytest.raises(InputTooLargeError, match="120,000 pixels"):
        load_image(data[:200], name="big.tif", max_pixels=100_000)  # header only: the check needs no pixels


def test_byte_limit(tmp_path: Path) -> None:
    data = _png(np.zeros((64, 64), np.uint8))
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(InputTooLargeError):
        load_image(path, max_bytes=10)
    with pytest.raises(InputTooLargeError):
        load_image(data, max_bytes=10)


# --- to_tensor ----------------------------------------------------------------------------------------------


def _model(
    in_channels: int, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> LoadedModel:
    return LoadedModel(
        module=nn.Identity(),
        in_channels=in_channels,
        input_size=size,
        class_names=("a", "b"),
        mean=mean,
        std=std,
        source_format="module",
        content_hash="0",
    )


def _image(pixels: np.ndarray, name: str = "x") -> LoadedImage:
    px = pixels.astype(np.float32)
    return LoadedImage(
        pixels=px,
        display=np.round(px * 255).astype(np.uint8),
        name=name,
        source_format="test",
        content_hash="0",
    )


def test_grey_to_three_channels_with_normalisation() -> None:
    model = _model(3, (16, 16), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = to_tensor(_image(np.full((16, 16), 0.6)), model)
    assert x.shape == (1, 3, 16, 16)
    assert x.dtype == torch.float32
    for c, (m, s) in enumerate(zip(model.mean, model.std)):
        torch.testing.assert_close(x[0, c], torch.full((16, 16), (0.6 - m) / s))


def test_colour_to_one_channel_matches_pil_luma() -> None:
    rgb = RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    model = _model(1, (24, 24), (0.0,), (1.0,))
    x = to_tensor(_image(rgb / 255.0), model)
    pil_l = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    assert x.shape == (1, 1, 24, 24)
    # PIL rounds its luma to 8 bits
    assert np.abs(x[0, 0].numpy() - pil_l).max() <= 0.5 / 255 + 1e-6


def test_resize_matches_pil_antialiased_bilinear() -> None:
    yy, xx = np.mgrid[0:128, 0:96]
    grey = (0.5 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 11.0)).astype(np.float32)
    model = _model(1, (64, 48), (0.0,), (1.0,))
    x = to_tensor(_image(grey), model)
    ref = np.asarray(Image.fromarray(grey, mode="F").resize((48, 64), Image.Resampling.BILINEAR))
    assert x.shape == (1, 1, 64, 48)
    assert np.abs(x[0, 0].numpy() - ref).max() < 2e-3


def test_as_input_takes_paths_bytes_loaded_images_and_tensors_alike(tmp_path: Path) -> None:
    """One conversion for every entry point: a path, the file's bytes and its LoadedImage give the same rows;
    a preprocessed tensor passes through as float32; anything else is a ShapeError naming the images."""
    model = _model(1, (16, 16), (0.5,), (0.25,))
    grey = RNG.integers(0, 256, (20, 12), dtype=np.uint8)
    path = tmp_path / "g.png"
    path.write_bytes(_png(grey))
    x = as_input([path, str(path), path.read_bytes(), load_image(path)], model)
    assert x.shape == (4, 1, 16, 16)
    expected = to_tensor(load_image(path), model)[0]
    for row in x:
        torch.testing.assert_close(row, expected, rtol=0, atol=0)
    t = torch.zeros(2, 1, 16, 16, dtype=torch.float64)
    assert as_input(t, model).dtype == torch.float32
    with pytest.raises(ShapeError, match=r"calibration set: expected an input tensor \(N, C, H, W\)"):
        as_input(torch.zeros(1, 16, 16), model, what="calibration set")
    with pytest.raises(ShapeError, match="no images given"):
        as_input([], model)


def test_batch_of_mixed_sizes_and_kinds() -> None:
    model = _model(3, (32, 32), (0.5,) * 3, (0.25,) * 3)
    imgs = [_image(np.zeros((40, 50))), _image(np.ones((20, 20, 3))), _image(np.full((32, 32), 0.5))]
    x = to_tensor(imgs, model)
    assert x.shape == (3, 3, 32, 32)
    torch.testing.assert_close(x[0], torch.full((3, 32, 32), -2.0))
    torch.testing.assert_close(x[1], torch.full((3, 32, 32), 2.0))
    torch.testing.assert_close(x[2], torch.zeros(3, 32, 32))


def test_channel_situations_that_cannot_be_adapted() -> None:
    with pytest.raises(ShapeError, match="3 channels but the model takes 2"):
        to_tensor(_image(np.zeros((16, 16, 3))), _model(2, (16, 16), (0.5,), (0.25,)))
    with pytest.raises(ShapeError, match="at least one image"):
        to_tensor([], _model(1, (16, 16), (0.5,), (0.25,)))
    with pytest.raises(ShapeError, match="mean/std"):
        to_tensor(_image(np.zeros((16, 16))), _model(3, (16, 16), (0.5, 0.5), (0.25,)))
