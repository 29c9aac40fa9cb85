"""Per-image annotations: rasterisation on hand-derived cases and against matplotlib's point-in-polygon,
PNG and JSON round trips, hostile JSON refused, DICOM SEG read back by highdicom with the image's geometry;
the DICOM window presets and windowing against pydicom."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ComputedRadiographyImageStorage, generate_uid

import verification.annotations as annotations_module
from tests.builders import dataset_bytes, dicom_dataset
from verification.annotations import (
    Annotation,
    AnnotationStore,
    Region,
    dicom_seg,
    mask_from_png,
    mask_png,
    rasterize,
)
from verification.errors import ImageLoadError, InputTooLargeError, InvalidInputError, UploadTooLargeError
from verification.io import load_image
from verification.io.budget import ResourceLimits
from verification.io.dicom import apply_preset, modality_frame, window_presets, window_unit

HASH = "ab" * 32


# ------------------------------------------------------------------------------------------- rasterisation


def test_box_takes_the_pixels_whose_centres_it_covers() -> None:
    # x 1.2..3.6 covers centres 1.5, 2.5, 3.5 (columns 1-3); y 0..1.5 covers centres 0.5, 1.5 (rows 0-1)
    m = rasterize([Region.box(1.2, 0.0, 3.6, 1.5)], (4, 5))
    expected = np.zeros((4, 5), bool)
    expected[0:2, 1:4] = True
    np.testing.assert_array_equal(m, expected)
    # corners in either order give the same box
    np.testing.assert_array_equal(rasterize([Region.box(3.6, 1.5, 1.2, 0.0)], (4, 5)), expected)


def test_box_narrower_than_a_pixel_centre_gap_marks_nothing() -> None:
    assert not rasterize([Region.box(1.6, 1.6, 2.4, 2.4)], (4, 4)).any()


def test_right_triangle_hand_derived() -> None:
    # vertices (0,0), (6,0), (0,3): inside where x/6 + y/3 < 1, i.e. (c+.5) + 2(r+.5) < 6, c + 2r < 4.5
    m = rasterize([Region.polygon([0, 6, 0], [0, 0, 3])], (4, 7))
    rr, cc = np.mgrid[0:4, 0:7]
    np.testing.assert_array_equal(m, cc + 2 * rr < 4.5)
    assert int(m.sum()) == 5 + 3 + 1  # rows 0, 1, 2 by hand


def test_concave_polygon_and_union() -> None:
    # a "U": the 5×4 square minus the notch x 2..3, y 0..2 (pixels column 2, rows 0-1)
    xs = [0, 2, 2, 3, 3, 5, 5, 0]
    ys = [0, 0, 2, 2, 0, 0, 4, 4]
    m = rasterize([Region.polygon(xs, ys)], (4, 5))
    expected = np.ones((4, 5), bool)
    expected[0:2, 2] = False
    np.testing.assert_array_equal(m, expected)
    both = rasterize([Region.polygon(xs, ys), Region.box(2, 0, 3, 2)], (4, 5))
    assert both.all()


def test_polygon_agrees_with_matplotlib_on_random_shapes() -> None:
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(0)
    h, w = 40, 50
    rr, cc = np.mgrid[0:h, 0:w]
    centres = np.stack([cc.ravel() + 0.5, rr.ravel() + 0.5], 1)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        # vertices off the half-pixel lattice so no centre sits exactly on an edge
        pts = rng.uniform(-5, 55, size=(n, 2)) + 0.123
        ours = rasterize([Region.polygon(pts[:, 0].tolist(), pts[:, 1].tolist())], (h, w))
        theirs = MplPath(pts).contains_points(centres).reshape(h, w)
        assert (ours != theirs).sum() <= 2, (
            "disagreements only where a centre lies within rounding of an edge"
        )


def test_region_validation() -> None:
    with pytest.raises(InvalidInputError):
        Region.polygon([0, 1], [0, 1])
    with pytest.raises(InvalidInputError):
        Region("box", ((0.0, 0.0), (float("nan"), 1.0)))
    with pytest.raises(InvalidInputError):
        Region("circle", ((0.0, 0.0), (1.0, 1.0)))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        rasterize([], (0, 5))


# ------------------------------------------------------------------------------------------- store + files


def _annotation() -> Annotation:
    return Annotation(
        HASH, "img.png", (30, 40), (Region.box(2, 3, 12, 9), Region.polygon([20, 35, 28], [5, 6, 25]))
    )


def test_store_replace_add_and_clear() -> None:
    store = AnnotationStore()
    a = store.add_region(HASH, "img.png", (30, 40), Region.box(0, 0, 4, 4))
    assert a.mask().sum() == 16
    a = store.add_region(HASH, "img.png", (30, 40), Region.box(10, 10, 12, 12))
    assert a.mask().sum() == 16 + 4
    assert len(a.regions) == 2
    store.set(Annotation(HASH, "img.png", (30, 40), (Region.box(0, 0, 1, 1),)))
    mask = store.mask(HASH)
    assert mask is not None
    assert int(mask.sum()) == 1
    assert store.masks_for([HASH, "cd" * 32])[1] is None
    store.clear(HASH)
    assert HASH not in store
    assert len(store) == 0
    store.set(Annotation(HASH, "img.png", (30, 40)))  # an empty annotation clears
    assert len(store) == 0


def test_png_mask_round_trip_and_size_check() -> None:
    a = _annotation()
    png = mask_png(a.mask())
    back = mask_from_png(png, (30, 40))
    np.testing.assert_array_equal(back, a.mask())
    with pytest.raises(ImageLoadError, match="native size"):
        mask_from_png(png, (40, 30))
    with pytest.raises(ImageLoadError):
        mask_from_png(b"not an image", (30, 40))


def test_json_round_trip_keeps_regions_and_imported_masks() -> None:
    imported = np.zeros((30, 40), bool)
    imported[20:25, 1:4] = True
    store = AnnotationStore([_annotation(), Annotation("cd" * 32, "b.dcm", (30, 40), (), "nodule", imported)])
    again = AnnotationStore.from_json(store.to_json())
    assert len(again) == 2
    for a in store:
        b = again.get(a.content_hash)
        assert b is not None
        assert b.image_name == a.image_name
        assert b.finding == a.finding
        assert b.regions == a.regions
        np.testing.assert_array_equal(b.mask(), a.mask())
        assert b.key() == a.key()


@pytest.mark.parametrize(
    "doc",
    [
        {"schema": "other"},
        {"schema": "verification.annotations/1", "annotations": "x"},
        {"schema": "verification.annotations/1", "annotations": [{"content_hash": "zz", "size": [3, 3]}]},
        {"schema": "verification.annotations/1", "annotations": [{"content_hash": HASH, "size": [0, 3]}]},
        {
            "schema": "verification.annotations/1",
            "annotations": [
                {"content_hash": HASH, "size": [3, 3], "regions": [{"kind": "box", "points": [[0]]}]}
            ],
        },
        {
            "schema": "verification.annotations/1",
            "annotations": [{"content_hash": HASH, "size": [3, 3], "evil": 1}],
        },
        {
            "schema": "verification.annotations/1",
            "annotations": [
                {
                    "content_hash": HASH,
                    "size": [3, 3],
                    "mask_png": base64.b64encode(mask_png(np.ones((4, 4)))).decode(),
                }
            ],
        },
    ],
)
def test_hostile_json_is_refused_with_a_typed_error(doc: dict) -> None:
    with pytest.raises((InvalidInputError, ImageLoadError)):
        AnnotationStore.from_json(json.dumps(doc))


def test_json_nesting_bomb_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        AnnotationStore.from_json("[" * 10_000 + "]" * 10_000)


# ------------------------------------------------------------------------------------------- memory bounds

H, W = 30, 40  # one imported mask keeps H × W = 1,200 bytes


def _doc(*hashes: str, size: tuple[int, int] = (H, W), mask: bool = True) -> str:
    png = base64.b64encode(mask_png(np.ones(size, bool))).decode()
    items = [
        {
            "content_hash": h,
            "image_name": f"{h[:2]}.png",
            "size": list(size),
            "regions": [{"kind": "box", "points": [[0, 0], [5, 5]]}],
            **({"mask_png": png} if mask else {}),
        }
        for h in hashes
    ]
    return json.dumps({"schema": "verification.annotations/1", "annotations": items})


def _counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    decoded: list[tuple[int, int]] = []
    real = annotations_module.mask_from_png

    def counting(data: bytes, size: tuple[int, int], **kw: Any) -> np.ndarray:
        decoded.append(size)
        return real(data, size, **kw)

    monkeypatch.setattr(annotations_module, "mask_from_png", counting)
    return decoded


def test_json_masks_are_charged_against_one_total_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = _counting_decoder(monkeypatch)
    limits = ResourceLimits(max_decoded_bytes=2 * H * W)  # two masks fit, not three
    doc = _doc("01" * 32, "02" * 32, "03" * 32)
    with pytest.raises(
        UploadTooLargeError, match=r"annotation 3: .*The first 2 of the file's 3 annotations fit"
    ):
        AnnotationStore.from_json(doc, limits=limits)
    assert decoded == [(H, W), (H, W)], "the third mask was refused before it was decoded"
    assert len(AnnotationStore.from_json(_doc("01" * 32, "02" * 32), limits=limits)) == 2
    # the same image twice: the second replaces the first and is not counted twice
    assert len(AnnotationStore.from_json(_doc("01" * 32, "01" * 32, "02" * 32), limits=limits)) == 2
    # regions alone keep no mask: not charged
    assert (
        len(AnnotationStore.from_json(_doc("01" * 32, "02" * 32, "03" * 32, mask=False), limits=limits)) == 3
    )


def test_import_into_a_session_is_all_or_nothing_and_counts_what_it_keeps() -> None:
    limits = ResourceLimits(max_decoded_bytes=2 * H * W)
    store = AnnotationStore(limits=limits)
    store.import_json(_doc("01" * 32))
    assert store.held_bytes == H * W
    mine = store.get("01" * 32)
    with pytest.raises(UploadTooLargeError, match=r"annotation 2: .*The first 1 of the file's 2"):
        store.import_json(_doc("02" * 32, "03" * 32))
    assert list(store) == [mine], "a refused import changes nothing"
    imported = store.import_json(_doc("01" * 32, "02" * 32))  # replaces 01: fits
    assert len(imported) == len(store) == 2
    assert store.held_bytes == 2 * H * W
    with pytest.raises(UploadTooLargeError, match=r"above the 0\.0 MiB limit"):  # a mask set by hand
        store.set(Annotation("03" * 32, "c.png", (H, W), (), "finding", np.ones((H, W), bool)))
    assert "03" * 32 not in store


def test_a_declared_size_too_large_to_rasterise_is_refused_on_import() -> None:
    """The review's case: 248 bytes declaring 16,000² and one box (mask() grew memory by 489 MiB)."""
    doc = _doc("ab" * 32, size=(16_000, 16_000), mask=False)
    with pytest.raises(InputTooLargeError, match="annotation 1: its image is 16,000×16,000 pixels"):
        AnnotationStore.from_json(doc)
    small = ResourceLimits(max_image_bytes=5 * H * W - 1)  # rasterising takes 5 bytes a pixel at most
    with pytest.raises(InputTooLargeError, match="limit for one image"):
        AnnotationStore.from_json(_doc("ab" * 32, mask=False), limits=small)
    assert (
        len(
            AnnotationStore.from_json(
                _doc("ab" * 32, mask=False), limits=ResourceLimits(max_image_bytes=5 * H * W)
            )
        )
        == 1
    )


def test_an_annotation_of_another_size_than_its_image_is_refused() -> None:
    doc = _doc("ab" * 32, mask=False)
    with pytest.raises(
        InvalidInputError, match=r"annotation 1: it is 40×30 pixels but the loaded image .* is 41×30"
    ):
        AnnotationStore.from_json(doc, sizes={"ab" * 32: (H, W + 1)})
    assert len(AnnotationStore.from_json(doc, sizes={"ab" * 32: (H, W), "cd" * 32: (5, 5)})) == 1
    # kept while its image was not loaded, then met on use: set aside with a message, never rasterised
    store = AnnotationStore.from_json(doc)
    assert store.for_image("cd" * 32, (H, W)) is None
    a = store.for_image("ab" * 32, (H, W))
    assert a is not None
    assert a.size == (H, W)
    with pytest.raises(
        InvalidInputError, match=r"is 40×30 pixels but this image .* is 41×30; it was set aside"
    ):
        store.for_image("ab" * 32, (H, W + 1))
    assert "ab" * 32 not in store


def _png_header(width: int, height: int, *, colour: int = 0, depth: int = 8, idat: bytes = b"") -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", idat or zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


def test_mask_decompression_bombs_and_corrupt_masks_are_typed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    # the review's 20,000² header: refused from the header, before PIL opens it
    with pytest.raises(InputTooLargeError, match="limit for one image"):
        mask_from_png(_png_header(20_000, 20_000), (20_000, 20_000), name="m.png")
    # PIL's own bomb check (DecompressionBombError) is an InputTooLargeError too
    png = mask_png(np.ones((H, W), bool))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", H * W // 4)
    with pytest.raises(InputTooLargeError, match="decompression bomb"):
        mask_from_png(png, (H, W), name="m.png")
    monkeypatch.undo()
    # a valid header whose data is cut short
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        mask_from_png(_png_header(W, H), (H, W), name="m.png")
    # decoding a 16-bit RGBA mask takes 2 × 8 + 5 bytes a pixel: refused from the header, PIL never opens it
    big = _png_header(W, H, colour=6, depth=16)

    def no_open(*a: object, **k: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(Image, "open", no_open)
    with pytest.raises(InputTooLargeError, match="to decode"):
        mask_from_png(big, (H, W), name="m.png", limits=ResourceLimits(max_image_bytes=20 * H * W))


def _pil_png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_grey_alpha_and_palette_masks_read_their_intensity_not_alpha_or_index() -> None:
    from PIL import Image

    half = np.zeros((H, W), np.uint8)
    half[:, : W // 2] = 255
    expected = half > 0
    la = Image.fromarray(np.stack([half, np.full_like(half, 255)], -1), mode="LA")  # opaque everywhere
    np.testing.assert_array_equal(mask_from_png(_pil_png(la), (H, W)), expected)
    p = Image.fromarray((half > 0).astype(np.uint8), mode="P")  # index 1 is white
    p.putpalette([0, 0, 0, 255, 255, 255])
    np.testing.assert_array_equal(mask_from_png(_pil_png(p), (H, W)), expected)
    grey16 = Image.fromarray(half.astype(np.uint16) * 257)
    np.testing.assert_array_equal(mask_from_png(_pil_png(grey16), (H, W)), expected)


# ------------------------------------------------------------------------------------------- DICOM


def _cr(rows: int = 60, cols: int = 80, **tags: Any) -> bytes:
    yy, xx = np.mgrid[0:rows, 0:cols]
    pixels = (xx * 40 + yy).astype(np.uint16)
    ds = dicom_dataset(
        pixels,
        sop_class=ComputedRadiographyImageStorage,
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        PatientName="Secret^Patient",
        PatientID="ID-12345",
        **tags,
    )
    return dataset_bytes(ds)


def _seg_mask(seg_bytes: bytes) -> tuple[Any, np.ndarray]:
    import highdicom as hd

    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    uid = seg.get_source_image_uids()[0][2]
    return seg, seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, :, :, 0]


def test_dicom_seg_reads_back_with_the_image_geometry_and_no_identifiers() -> None:
    data = _cr()
    src = pydicom.dcmread(io.BytesIO(data))
    image = load_image(data, name="cr.dcm")
    a = Annotation(image.content_hash, "cr.dcm", image.size, (Region.box(10, 20, 50, 40),), "nodule")
    seg, mask = _seg_mask(dicom_seg(a, data))
    assert (seg.Rows, seg.Columns) == (60, 80)
    np.testing.assert_array_equal(mask.astype(bool), a.mask())
    assert seg.SegmentSequence[0].SegmentLabel == "nodule"
    assert str(seg.PatientName) == ""
    assert seg.PatientID == ""
    assert seg.StudyInstanceUID != src.StudyInstanceUID
    # the same source always gives the same derived study UID (several SEGs land in one study)
    seg2, _ = _seg_mask(dicom_seg(a, data))
    assert seg2.StudyInstanceUID == seg.StudyInstanceUID
    assert b"Secret" not in dicom_seg(a, data)
    assert b"ID-12345" not in dicom_seg(a, data)


def test_dicom_seg_keeps_identifiers_only_when_asked() -> None:
    data = _cr()
    src = pydicom.dcmread(io.BytesIO(data))
    image = load_image(data, name="cr.dcm")
    a = Annotation(image.content_hash, "cr.dcm", image.size, (Region.polygon([5, 70, 40], [5, 10, 55]),))
    seg, mask = _seg_mask(dicom_seg(a, data, include_identifying=True))
    assert str(seg.PatientName) == "Secret^Patient"
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    np.testing.assert_array_equal(mask.astype(bool), a.mask())


def test_dicom_seg_refuses_a_mask_of_another_size_or_an_empty_one() -> None:
    data = _cr()
    image = load_image(data, name="cr.dcm")
    with pytest.raises(InvalidInputError, match="draw the region"):
        dicom_seg(Annotation(image.content_hash, "cr.dcm", (61, 80), (Region.box(1, 1, 5, 5),)), data)
    with pytest.raises(InvalidInputError, match="no pixel"):
        dicom_seg(
            Annotation(image.content_hash, "cr.dcm", image.size, (Region.box(1.6, 1.6, 2.4, 2.4),)), data
        )


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("center", "width"), [(1000.0, 400.0), (2047.5, 4096.0), (300.0, 1.0), (10.0, 2.0)])
def test_window_unit_matches_pydicom(function: str, center: float, width: float) -> None:
    from pydicom.pixels.processing import apply_windowing

    if function != "LINEAR" and width == 1.0:
        width = 0.5
    values = np.linspace(-100.0, 4200.0, 20_001)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 16
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.VOILUTFunction = function
    theirs = (apply_windowing(values.copy(), ds) - 0.0) / 65535.0  # output spans 0 .. 2**16 - 1
    np.testing.assert_allclose(window_unit(values, center, width, function), theirs, atol=2e-6)


def test_window_presets_from_the_file_and_the_loader_uses_the_first() -> None:
    data = _cr(
        WindowCenter=[1500, 800], WindowWidth=[1000, 400], WindowCenterWidthExplanation=["WIDE", "SOFT"]
    )
    frame = modality_frame(data, name="w.dcm", max_pixels=10**7)
    assert frame is not None
    assert [(p.center, p.width) for p in frame.presets] == [(1500.0, 1000.0), (800.0, 400.0)]
    assert "WIDE" in frame.presets[0].label
    assert "SOFT" in frame.presets[1].label
    loaded = load_image(data, name="w.dcm").pixels
    np.testing.assert_allclose(apply_preset(frame, frame.presets[0]), loaded, atol=1e-6)
    second = apply_preset(frame, frame.presets[1])
    assert not np.allclose(second, loaded)
    np.testing.assert_allclose(second, window_unit(frame.values, 800.0, 400.0), atol=1e-7)


def test_window_presets_skip_an_unusable_width_and_read_voi_luts() -> None:
    ds = Dataset()
    ds.WindowCenter, ds.WindowWidth = [100, 50], [0, 10]
    assert [(p.center, p.width) for p in window_presets(ds)] == [(50.0, 10.0)]
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = [0, 80, 160, 255]
    item.LUTExplanation = "BONE"
    ds.VOILUTSequence = [item]
    presets = window_presets(ds)
    assert presets[0].lut_index == 0
    assert "BONE" in presets[0].label


def test_a_voi_lut_preset_is_what_the_loader_applied() -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = (np.arange(4096, dtype="<u2") // 2).tobytes()
    item.LUTExplanation = "HALF"
    data = _cr(VOILUTSequence=[item])
    frame = modality_frame(data, name="lut.dcm", max_pixels=10**7)
    assert frame is not None
    assert frame.presets[0].lut_index == 0
    expected = (frame.values // 2) / 4095.0  # the LUT by hand, onto the 12-bit output range
    np.testing.assert_allclose(apply_preset(frame, frame.presets[0]), expected, atol=1e-6)
    np.testing.assert_allclose(load_image(data, name="lut.dcm").pixels, expected, atol=1e-6)
