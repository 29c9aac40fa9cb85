"""Property-based fuzzing of the image and sidecar parsers (hypothesis), run by ``test_properties.py`` in a
child process whose address space is capped.

The property, for any input hypothesis makes: the parser returns a sane result (an image with finite pixels in
[0, 1]; a model whose normalisation is finite) or raises a :mod:`verification.errors` exception with a message
under 2,000 characters. Any other exception, or a wrong result, fails with hypothesis's shrunk example.

Inputs: arbitrary bytes under every image suffix; a small upload zip with bytes changed or cut (the
dashboard's expand_uploads, then every entry decoded); maps/references of any shape, dtype (NaN/inf included),
threshold and grid for compute_metrics; valid PNG/JPEG/TIFF/DICOM files with bytes flipped,
truncated or spliced; PNG and DICOM headers with arbitrary geometry and depth over little data; the demo
model's sidecar with keys replaced by arbitrary JSON (huge integers, NaN/inf, deep lists, strings) and
unknown keys added. No example database is written (``database=None``).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import dataset_bytes
from tests.fuzz import corpus

MAX_MESSAGE = 2000
# Derandomised in the suite (the same examples every run, so a result is reproducible and an xfail is stable);
# FUZZ_RANDOM=1 explores new examples on every run, FUZZ_SCALE=<k> runs k times as many:
#   FUZZ_RANDOM=1 FUZZ_SCALE=10 python -m tests.fuzz.properties /tmp/properties.json
SETTINGS = settings(
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def _check_error(exc: BaseException) -> None:
    from verification.errors import VerificationError

    if not isinstance(exc, VerificationError):
        raise AssertionError(f"untyped {type(exc).__name__}: {exc}") from exc
    if len(str(exc)) > MAX_MESSAGE:
        raise AssertionError(f"{type(exc).__name__} message of {len(str(exc)):,} characters")


def _image_ok(data: bytes, name: str) -> None:
    import numpy as np

    from verification.io import load_image

    try:
        img = load_image(data, name=name)
    except Exception as exc:
        _check_error(exc)
        return
    px = img.pixels
    assert px.dtype == np.float32, px.dtype
    assert px.ndim in (2, 3), px.shape
    assert np.isfinite(px).all(), "non-finite pixels"
    assert px.min() >= 0, px.min()
    assert px.max() <= 1, px.max()
    assert min(px.shape[:2]) >= 8


# ---------------------------------------------------------------------------------------------- seeds


def _seeds() -> dict[str, bytes]:
    import numpy as np
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.arange(32 * 32, dtype=np.uint16) * 61).reshape(32, 32))
    return {
        "seed.png": corpus.pil_bytes("PNG", 32),
        "seed16.png": corpus.png_bytes(32, 32, bit_depth=16, colour=0),
        "seed.jpg": corpus.pil_bytes("JPEG", 32),
        "seed.tif": buf.getvalue(),
        "seed.dcm": dataset_bytes(corpus._dataset(32, 32)),
    }


SEEDS = _seeds()
SUFFIXES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".gif", ".bmp", ""]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "splice", "insert"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            value = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
            width = draw(st.integers(1, 4))
            data[at : at + width] = bytes([value]) * width
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            start = draw(st.integers(0, len(other) - 1))
            data[at:] = other[start:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data), draw(st.sampled_from([name, "upload" + draw(st.sampled_from(SUFFIXES))]))


@st.composite
def png_headers(draw: st.DrawFn) -> bytes:
    width = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1)))
    height = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1)))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3, 32]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    body = draw(st.binary(max_size=256))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, draw(st.sampled_from([0, 1])))
    idat = __import__("zlib").compress(body)
    return (
        b"\x89PNG\r\n\x1a\n"
        + corpus._chunk(b"IHDR", ihdr)
        + corpus._chunk(b"IDAT", idat)
        + corpus._chunk(b"IEND", b"")
    )


@st.composite
def tiff_ifds(draw: st.DrawFn) -> bytes:
    """The seed TIFF with IFD entries given other field types, counts and values (tifffile's weak spot)."""
    data = bytearray(SEEDS["seed.tif"])
    ifd = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[ifd : ifd + 2])[0]
    for _ in range(draw(st.integers(1, 4))):
        at = ifd + 2 + 12 * draw(st.integers(0, n - 1))
        field = draw(st.sampled_from(["type", "count", "value", "tag"]))
        if field == "type":
            struct.pack_into("<H", data, at + 2, draw(st.integers(0, 18)))
        elif field == "count":
            struct.pack_into("<I", data, at + 4, draw(st.sampled_from([0, 2, 3, 255, 2**31, 2**32 - 1])))
        elif field == "value":
            struct.pack_into("<I", data, at + 8, draw(st.integers(0, 2**32 - 1)))
        else:
            struct.pack_into(
                "<H",
                data,
                at,
                draw(
                    st.sampled_from(
                        [256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 338, 339]
                    )
                ),
            )
    return bytes(data)


@st.composite
def dicom_headers(draw: st.DrawFn) -> bytes:
    ds = corpus._dataset(16, 16)
    ds.Rows = draw(st.one_of(st.integers(0, 64), st.integers(0, 65535)))
    ds.Columns = draw(st.one_of(st.integers(0, 64), st.integers(0, 65535)))
    ds.BitsAllocated = draw(st.sampled_from([1, 8, 12, 16, 32, 64, 0, 7]))
    ds.BitsStored = draw(st.integers(0, 64))
    ds.HighBit = draw(st.integers(0, 63))
    ds.SamplesPerPixel = draw(st.sampled_from([1, 3, 4, 0, 2]))
    ds.PixelRepresentation = draw(st.sampled_from([0, 1]))
    ds.PhotometricInterpretation = draw(
        st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "HSV"])
    )
    if draw(st.booleans()):
        ds.NumberOfFrames = draw(st.integers(-5, 10**6))
    if draw(st.booleans()):
        ds.WindowCenter = draw(st.floats(-1e6, 1e6))
        ds.WindowWidth = draw(st.floats(-10, 1e6))
    if draw(st.booleans()):
        ds.RescaleSlope = draw(st.floats(-1e10, 1e10))
        ds.RescaleIntercept = draw(st.floats(-1e10, 1e10))
    ds.PixelData = draw(st.binary(max_size=2048))
    if len(ds.PixelData) % 2:
        ds.PixelData += b"\0"
    return dataset_bytes(ds)


# ---------------------------------------------------------------------------------------------- images


@given(st.binary(max_size=4096), st.sampled_from(SUFFIXES))
def image_from_random_bytes(data: bytes, suffix: str) -> None:
    _image_ok(data, "random" + suffix)


@given(mutated())
def image_from_mutated_file(case: tuple[bytes, str]) -> None:
    _image_ok(*case)


@given(png_headers())
def image_from_png_header(data: bytes) -> None:
    _image_ok(data, "header.png")


@given(dicom_headers())
def image_from_dicom_header(data: bytes) -> None:
    _image_ok(data, "header.dcm")


@given(tiff_ifds())
def image_from_tiff_ifd(data: bytes) -> None:
    _image_ok(data, "ifd.tif")


# ---------------------------------------------------------------------------------------------- uploads


def _seed_zip() -> bytes:
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("normal/a.png", SEEDS["seed.png"])
        zf.writestr("nodule/b.dcm", SEEDS["seed.dcm"])
        zf.writestr("README.txt", b"hello")
    return buf.getvalue()


SEED_ZIP = _seed_zip()


@given(
    st.lists(st.tuples(st.integers(0, len(SEED_ZIP) - 1), st.integers(0, 255)), max_size=6),
    st.integers(1, len(SEED_ZIP)),
)
def upload_from_mutated_zip(edits: list[tuple[int, int]], keep: int) -> None:
    from verification.io import load_image
    from verification.uploads import expand_uploads

    data = bytearray(SEED_ZIP)
    for at, value in edits:
        data[at] = value
    try:
        expanded = expand_uploads([("upload.zip", bytes(data[:keep]))])
    except Exception as exc:
        _check_error(exc)
        return
    for blob in expanded.blobs:
        try:
            load_image(blob.data, name=blob.name)
        except Exception as exc:
            _check_error(exc)


# ---------------------------------------------------------------------------------------------- metrics

finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def metric_arrays(draw: st.DrawFn) -> Any:
    import numpy as np
    from hypothesis.extra import numpy as hnp

    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(0, 12)) for _ in range(ndim))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]))
    elements = finite_or_not if dtype in (np.float32, np.float64) else None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@given(
    metric_arrays(),
    metric_arrays(),
    st.one_of(finite_or_not, st.just("otsu"), st.text(max_size=3)),
    st.one_of(st.none(), st.tuples(st.integers(-2, 300), st.integers(-2, 300))),
)
def metrics_from_arrays(maps: Any, refs: Any, threshold: Any, size: Any) -> None:
    import numpy as np

    from verification.metrics import METRICS, compute_metrics

    try:
        values = compute_metrics(maps, refs, threshold=threshold, size=size)
    except Exception as exc:
        _check_error(exc)
        return
    for name, vals in values.items():
        lo, hi = METRICS[name].range
        for i, v in enumerate(np.asarray(vals)):
            if np.isnan(v):
                assert i in values.reasons.get(name, {}), f"{name}[{i}] is NaN without a reason"
            else:
                assert lo - 1e-6 <= v <= hi + 1e-6, (name, v)


# ---------------------------------------------------------------------------------------------- sidecars

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SIDECAR = json.loads(corpus.SOUND_JSON.read_text())
WEIGHTS = corpus.SOUND.read_bytes()


@st.composite
def sidecars(draw: st.DrawFn) -> dict[str, Any]:
    doc = dict(SIDECAR)
    for key in draw(st.lists(st.sampled_from(sorted(SIDECAR)), min_size=1, max_size=3, unique=True)):
        doc[key] = draw(json_values)
    if draw(st.booleans()):
        doc[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    if draw(st.booleans()):
        doc["arch_kwargs"] = {draw(st.text(max_size=16)): draw(json_values)}
    return doc


def _sidecar_ok(doc: dict[str, Any]) -> None:
    from verification.io import load_model_bytes

    try:
        model = load_model_bytes(WEIGHTS, "sound.safetensors", sidecar_json=doc)
    except Exception as exc:
        _check_error(exc)
        return
    assert all(math.isfinite(v) for v in (*model.mean, *model.std)), (model.mean, model.std)
    assert len(model.class_names) == model.num_classes


@given(sidecars())
def sidecar_mutated(doc: dict[str, Any]) -> None:
    _sidecar_ok(doc)


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def sidecar_arbitrary(doc: dict[str, Any]) -> None:
    _sidecar_ok(doc)


CHECKS: dict[str, tuple[Callable[[], None], int]] = {
    "image_from_random_bytes": (image_from_random_bytes, 200),
    "image_from_mutated_file": (image_from_mutated_file, 300),
    "image_from_png_header": (image_from_png_header, 150),
    "image_from_dicom_header": (image_from_dicom_header, 150),
    "image_from_tiff_ifd": (image_from_tiff_ifd, 300),
    "upload_from_mutated_zip": (upload_from_mutated_zip, 150),
    "metrics_from_arrays": (metrics_from_arrays, 120),
    "sidecar_mutated": (sidecar_mutated, 30),
    "sidecar_arbitrary": (sidecar_arbitrary, 60),
}


def _describe(exc: BaseException) -> str:
    """The error(s) and hypothesis's falsifying example(s), each cut to a readable length."""
    parts = list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else [exc]
    lines = []
    for k, part in enumerate(parts, 1):
        cause = part.__cause__ or part.__context__
        lines.append(f"[{k}/{len(parts)}] {type(part).__name__}: {str(part)[:600]}")
        if cause is not None:
            lines.append(f"    caused by {type(cause).__name__}: {str(cause)[:400]}")
        for note in getattr(part, "__notes__", []):
            lines.append("    " + (note if len(note) < 800 else note[:700] + " …"))
    return "\n".join(lines)


def main(out: str) -> int:
    """Run every check; write ``{name: {"ok", "seconds", "examples", "failure"}}`` as JSON to ``out``."""
    results: dict[str, dict[str, Any]] = {}
    scale = max(1, int(os.environ.get("FUZZ_SCALE", "1")))  # FUZZ_SCALE=10: ten times the examples
    for name, (fn, n) in CHECKS.items():
        n *= scale
        t0 = time.monotonic()
        failure = ""
        try:
            settings(SETTINGS, max_examples=n)(fn)()
        except Exception as exc:
            failure = _describe(exc)
        results[name] = {
            "ok": not failure,
            "seconds": time.monotonic() - t0,
            "examples": n,
            "failure": failure,
        }
        print(
            f"{'ok  ' if not failure else 'FAIL'}  {name}: {n} examples, {results[name]['seconds']:.1f} s",
            flush=True,
        )
        with open(out, "w") as fh:
            json.dump(results, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
