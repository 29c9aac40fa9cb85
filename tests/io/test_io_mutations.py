"""Deterministic mutation fuzzing of every loader input: random bytes flipped in small PNG/JPEG/TIFF/DICOM
files and zips, values swapped in a real .pt2's JSON entries, characters changed in a sidecar. Every outcome
must be a load or a verification.errors exception (run by hand with more rounds, this found four untyped
crashes: pydicom's BytesLengthException, a torch assertion in unflatten, a zipfile seek error, a non-string
guard)."""

from __future__ import annotations

import contextlib
import io
import json
import random
import zipfile
from collections.abc import Callable

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from tests.builders import dicom_bytes
from verification.errors import VerificationError
from verification.io.images import load_image
from verification.io.models import load_model_bytes
from verification.io.sidecar import parse_sidecar, read_sidecar_bytes
from verification.uploads import expand_uploads

ROUNDS = 150
PT2_ROUNDS = 15  # each one runs torch.export.load when the archive survives inspection


def _pil(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
        buf, format=fmt
    )
    return buf.getvalue()


def _tiff() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.random.default_rng(0).random((40, 50)).astype(np.float32))
    return buf.getvalue()


def _dicom() -> bytes:
    return dicom_bytes(np.arange(2000, dtype=np.uint16).reshape(40, 50), WindowCenter=100, WindowWidth=200)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/x.png", _pil("PNG"))
        zf.writestr("b/y.dcm", _dicom())
    return buf.getvalue()


def _flip(seed: bytes, rng: random.Random) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _expand_and_load(data: bytes) -> None:
    for blob in expand_uploads([("m.zip", data)]).blobs:
        with contextlib.suppress(VerificationError):
            load_image(blob.data, name=blob.name)


CASES: dict[str, tuple[Callable[[], bytes], Callable[[bytes], object]]] = {
    "png": (lambda: _pil("PNG"), lambda d: load_image(d, name="m.png")),
    "jpeg": (lambda: _pil("JPEG"), lambda d: load_image(d, name="m.jpg")),
    "tiff": (_tiff, lambda d: load_image(d, name="m.tif")),
    "dicom": (_dicom, lambda d: load_image(d, name="m.dcm")),
    "zip": (_zip, _expand_and_load),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_flipped_bytes_load_or_raise_typed(kind: str) -> None:
    make, run = CASES[kind]
    seed = make()
    rng = random.Random(kind)
    for _ in range(ROUNDS):
        with contextlib.suppress(VerificationError):
            run(_flip(seed, rng))


def _swap_a_value(doc: object, rng: random.Random) -> None:
    while isinstance(doc, dict | list) and doc:
        key = rng.choice(list(doc)) if isinstance(doc, dict) else rng.randrange(len(doc))
        if rng.random() < 0.3 or not isinstance(doc[key], dict | list):  # type: ignore[index]
            doc[key] = rng.choice([None, 1, -5, "x", [], {}, 1e308, [1, 2]])  # type: ignore[index]
            return
        doc = doc[key]  # type: ignore[index]


def test_pt2_with_swapped_json_values_loads_or_raises_typed() -> None:
    net = nn_net()
    program = torch.export.export(
        net, (torch.zeros(2, 1, 32, 32),), dynamic_shapes=({0: torch.export.Dim("b")},)
    )
    buf = io.BytesIO()
    torch.export.save(program, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    names = src.namelist()
    jsons = [n for n in names if n.endswith(".json")]
    rng = random.Random("pt2")
    for _ in range(PT2_ROUNDS):
        target = rng.choice(jsons)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for name in names:
                content = src.read(name)
                if name == target:
                    doc = json.loads(content)
                    _swap_a_value(doc, rng)
                    content = json.dumps(doc).encode()
                dst.writestr(name, content)
        with contextlib.suppress(VerificationError):
            load_model_bytes(out.getvalue(), "m.pt2")


def _model_files() -> dict[str, bytes]:
    from safetensors.torch import save

    sd = nn_net().state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    program = torch.export.export(nn_net(), (torch.zeros(1, 1, 32, 32),))
    pt2 = io.BytesIO()
    torch.export.save(program, pt2)
    return {"m.safetensors": save(sd), "m.pt": buf.getvalue(), "m.pt2": pt2.getvalue()}


def test_model_files_with_flipped_bytes_load_or_raise_typed() -> None:
    """Safetensors, a torch.save state dict and a .pt2 with random bytes flipped: loaded or typed."""
    rng = random.Random("models")
    for name, seed in _model_files().items():
        for _ in range(8):
            with contextlib.suppress(VerificationError):
                load_model_bytes(_flip(seed, rng), name, architecture="mobilenet_v2")


def nn_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()


def test_sidecar_with_changed_characters_parses_or_raises_typed() -> None:
    base = json.dumps(
        {
            "architecture": "mobilenet_v3_small",
            "arch_kwargs": {"width_mult": 0.5},
            "class_names": ["a", "b"],
            "input_size": [64, 64],
            "mean": [0.5],
            "std": [0.25],
            "task": "classification",
            "garbage_class": "a",
        }
    ).encode()
    rng = random.Random("sidecar")
    for _ in range(10 * ROUNDS):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.choice(b'{}[]":,0123456789.eE-+naNIfty ')
        with contextlib.suppress(VerificationError):
            parse_sidecar(read_sidecar_bytes(bytes(data)))


def test_zip_needing_an_unknown_version_is_typed() -> None:
    """zipfile raises NotImplementedError when the central directory asks for a newer extract version."""
    buf = io.BytesIO()
    torch.save(nn_net().state_dict(), buf)
    data = bytearray(buf.getvalue())
    pos = data.find(b"PK\x01\x02")
    data[pos + 6 : pos + 8] = (79).to_bytes(2, "little")
    with pytest.raises(VerificationError):
        load_model_bytes(bytes(data), "v79.pt", architecture="resnet18")
    with pytest.raises(VerificationError):
        expand_uploads([("v79.zip", bytes(data))])
