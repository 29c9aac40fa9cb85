"""Peak memory of the worst hostile input per category against the budget (issue #14 "must show").

Run by hand (minutes; not collected by pytest): nice -n 10 .venv/bin/python -m tests.io.measure_peaks [filter]
Each case runs in a fresh child whose address space is capped at the budget plus 512 MiB of slack
(tests/io/memcap.py); peak = resident high-water mark during the call minus resident size before it.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tests.builders import dicom_bytes, zip_bytes
from tests.io.memcap import run_capped
from tests.io.test_io_hostile_images import png_bomb, tiff_with_declared_size
from verification.io.budget import DEFAULT_LIMITS, DEFAULT_MODEL_LIMITS
from verification.io.images import image_cost

MiB = 1 << 20
SLACK = 512 * MiB
IMG = DEFAULT_LIMITS.max_image_bytes
UPLOAD = DEFAULT_LIMITS.max_decoded_bytes
ARCHIVES = DEFAULT_LIMITS.max_archive_bytes
# loading holds the file, the decoded weights and the built module (ModelLimits' docstring)
MODEL = DEFAULT_MODEL_LIMITS.max_file_bytes + 2 * DEFAULT_MODEL_LIMITS.max_decoded_bytes

LOAD = "verification.io.images.load_image(data[0], name=NAME)"
LOAD_MODEL = "verification.io.models.load_model_bytes"
# The dashboard's sidebar path without Streamlit: expand the upload, then decode every blob.
SIDEBAR = (
    "from verification.uploads import expand_uploads\n"
    "exp = expand_uploads([(f'u{i}.zip', d) for i, d in enumerate(data)])\n"
    "kept = [verification.io.images.load_image(b.data, name=b.name) for b in exp.blobs]\n"
)


def _sparse_zip(name: str, size: int, every: int = 300) -> bytes:
    """One entry of ``size`` bytes: one random byte per ``every`` zeros (~90:1 under deflate, below 200:1)."""
    rng = np.random.default_rng(0)
    block = np.zeros(64 * MiB, np.uint8)
    block[::every] = rng.integers(1, 256, block[::every].shape, dtype=np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, zf.open(name, "w") as fh:
        left = size
        while left > 0:
            n = min(left, block.size)
            fh.write(block[:n].tobytes())
            left -= n
    return buf.getvalue()


def _safetensors_resnet50() -> tuple[bytes, bytes]:
    from safetensors.torch import save

    from verification.io.architectures import build_architecture

    sd = build_architecture("resnet50", num_classes=3, in_channels=1).state_dict()
    side = {"architecture": "resnet50", "in_channels": 1, "num_classes": 3, "input_size": [1024, 1024]}
    return save({k: v.contiguous() for k, v in sd.items()}), json.dumps(side).encode()


def _pt2_use_pickle() -> bytes:
    from tests.io.test_io_hostile_models import _rewrite, use_pickle

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.zeros(1, 1, 32, 32))
    ep = torch.export.export(net.eval(), (torch.zeros(1, 1, 32, 32),))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return _rewrite(buf.getvalue(), use_pickle(Path("/tmp/io_measure_marker")))


Case = tuple[str, str, Callable[[], list[bytes]], str, int, int | None]


def cases() -> list[Case]:
    c: list[Case] = []
    # (category, input, files, call, budget, estimate or None)
    for name, make in [
        ("8192² RGB 8-bit PNG (issue: 2.4 GB)", lambda: png_bomb(8192, 8192)),
        ("8192² RGBA 16-bit PNG (issue: 2.8 GB)", lambda: png_bomb(8192, 8192, depth=16, colour=6)),
        ("1024²×1000 float64 TIFF (issue: 7.8 GiB)", lambda: tiff_with_declared_size(1024, 1024, 1000)),
        ("4600² RGB 8-bit PNG (largest accepted RGB)", lambda: png_bomb(4600, 4600)),
        ("4700² RGBA 16-bit PNG (largest accepted)", lambda: png_bomb(4700, 4700, depth=16, colour=6)),
        ("4096² float64 grey TIFF", lambda: _tiff_float(4096)),
        (
            "4096² 16-bit DICOM with window",
            lambda: dicom_bytes(np.zeros((4096, 4096), np.uint16), WindowCenter=100, WindowWidth=200),
        ),
    ]:
        c.append(("image", name, (lambda m=make: [m()]), LOAD, IMG, -1))
    c.append(
        (
            "upload",
            "zip of 24 PNGs 8192² RGB (issue: 6 GB cap hit)",
            lambda: [zip_bytes({f"s/{i}.png": png_bomb(8192, 8192) for i in range(24)})],
            SIDEBAR,
            UPLOAD,
            None,
        )
    )
    c.append(
        (
            "upload",
            "zip of 24 PNGs 4096² RGB (each accepted)",
            lambda: [zip_bytes({f"s/{i}.png": png_bomb(4096, 4096) for i in range(24)})],
            SIDEBAR,
            UPLOAD,
            None,
        )
    )
    c.append(
        (
            "upload",
            "four zips of 300 MiB each (~3.5 MB each)",
            lambda: [_sparse_zip(f"p{i}/x.dcm", 300 * MiB) for i in range(4)],
            SIDEBAR,
            ARCHIVES,
            None,
        )
    )
    c.append(
        (
            "upload",
            "four zips of 768 MiB each (~9 MB each)",
            lambda: [_sparse_zip(f"p{i}/x.dcm", 768 * MiB) for i in range(4)],
            SIDEBAR,
            ARCHIVES,
            None,
        )
    )
    c.append(
        (
            "model",
            "sidecar input_size [100000, 100000]",
            lambda: [b"x"],
            f"{LOAD_MODEL}(data[0], 'w.safetensors', sidecar_json="
            "{'architecture': 'resnet18', 'input_size': [100000, 100000]})",
            MODEL,
            None,
        )
    )
    c.append(
        (
            "model",
            "sidecar width_mult 1000",
            lambda: [b"x"],
            f"{LOAD_MODEL}(data[0], 'w.safetensors', sidecar_json="
            "{'architecture': 'mobilenet_v3_small', 'arch_kwargs': {'width_mult': 1000}})",
            MODEL,
            None,
        )
    )
    c.append(
        (
            "model",
            ".pt2 with use_pickle payload",
            lambda: [_pt2_use_pickle()],
            "verification.io.models.load_model_bytes(data[0], 'evil.pt2')",
            MODEL,
            None,
        )
    )
    c.append(
        (
            "model",
            "resnet50 weights, input_size 1024² (largest accepted dry run)",
            lambda: list(_safetensors_resnet50()),
            f"import json\n{LOAD_MODEL}(data[0], 'r50.safetensors', sidecar_json=json.loads(data[1]))",
            MODEL,
            None,
        )
    )
    return c


def _tiff_float(side: int) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.linspace(0, 1, side * side).reshape(side, side), compression="zlib")
    return buf.getvalue()


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        only = sys.argv[1] if len(sys.argv) > 1 else ""
        for category, label, make, call, budget, estimate in cases():
            if only not in label:
                continue
            blobs = make()
            paths = []
            for i, blob in enumerate(blobs):
                path = Path(tmp) / f"in{i}"
                path.write_bytes(blob)
                paths.append(path)
            est = image_cost(blobs[0], "x.png").peak_bytes if estimate == -1 else None
            body = f"NAME = {label!r}\n{call}"
            cap = budget + SLACK if "largest accepted dry run" not in label else 4 << 30
            res = run_capped(body, paths, cap_bytes=cap, timeout=600)
            row = {
                "category": category,
                "input": label,
                "file_MB": round(sum(len(b) for b in blobs) / 1e6, 2),
                "outcome": res["outcome"],
                "error": res["error"],
                "peak_MiB": round(int(res.get("peak_bytes", 0) or 0) / MiB, 1),
                "estimate_MiB": round(est / MiB, 1) if est else None,
                "budget_MiB": budget // MiB,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| category | input | file MB | outcome | peak MiB | estimate MiB | budget MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        outcome = r["outcome"] + (f" ({r['error']})" if r["error"] else "")
        print(
            f"| {r['category']} | {r['input']} | {r['file_MB']} | {outcome} | {r['peak_MiB']} | "
            f"{r['estimate_MiB'] or ''} | {r['budget_MiB']} |"
        )
    sys.exit(0)


if __name__ == "__main__":
    main()
