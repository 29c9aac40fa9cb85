"""The model matrix (tests/models/matrix.py) in the API, the CLI and the dashboard's upload path.

CI runs :data:`matrix.CI_CELLS` (every family as safetensors; state dicts and both kinds of .pt2 export on a
subset that includes the torchxrayvision DenseNet exported with its batch fixed at 1).
``VERIFICATION_MODEL_MATRIX=full`` runs every family in every format; ``python bench/model_matrix.py`` prints
the same table and saves it to test-artifacts/model-matrix.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.models import matrix

FULL = os.environ.get("VERIFICATION_MODEL_MATRIX") == "full"
CELLS = sorted(
    (f, fmt) for f in matrix.FAMILIES for fmt in matrix.FORMATS if FULL or (f, fmt) in matrix.CI_CELLS
)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each family built once, written in the formats its cells need."""
    root = tmp_path_factory.mktemp("model_matrix")
    files: dict[tuple[str, str], Path] = {}
    for name, family in matrix.FAMILIES.items():
        formats = [fmt for f, fmt in CELLS if f == name]
        if not formats:
            continue
        module = matrix.build(family)
        for fmt in formats:
            files[(name, fmt)] = matrix.write(family, fmt, module, root)
    return files


@pytest.mark.parametrize(("family", "fmt"), CELLS, ids=[f"{f}-{fmt}" for f, fmt in CELLS])
def test_cell(family: str, fmt: str, model_files: dict[tuple[str, str], Path]) -> None:
    cell = matrix.run_cell(
        matrix.FAMILIES[family], fmt, model_files[(family, fmt)], fixed_expected=matrix.expected_fixed(fmt)
    )
    failed = {k: v for k, v in cell.results.items() if v != "ok"}
    assert not failed, failed


def test_static_export_matches_eager_in_batches(model_files: dict[tuple[str, str], Path]) -> None:
    """The chunked static-batch program gives the eager model's numbers on a batch of 3 with one target each:
    Grad-CAM, Score-CAM (fast) and Ablation-CAM (at layer1: 64 channels, 192 forwards of batch 1)."""
    from verification.cam import compute_cams
    from verification.io.models import load_model

    family = matrix.FAMILIES["resnet18"]
    exported = load_model(model_files[("resnet18", "pt2_static")])
    eager = load_model(model_files[("resnet18", "safetensors")])
    assert exported.fixed_batch == 1
    assert eager.fixed_batch is None
    x = matrix.images(family)
    opts: dict[str, dict[str, Any]] = {"scorecam": {"mode": "fast", "k": 8}, "ablationcam": {"chunk_size": 5}}
    for method, layer in (("gradcam", "layer4"), ("scorecam", "layer4"), ("ablationcam", "layer1")):
        (a,) = compute_cams(exported, x, methods=(method,), target=[2, 0, 1], options=opts, layers=[layer])
        (b,) = compute_cams(eager, x, methods=(method,), target=[2, 0, 1], options=opts, layers=[layer])
        assert list(a.targets) == [2, 0, 1]
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-3, atol=1e-4, err_msg=method)


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "verification", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def test_cli_layers_and_cam_on_static_exports(
    model_files: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """The CLI on the user's case (the xrv DenseNet exported with batch 1): layers, and Grad-CAM + Score-CAM
    (exact: one forward per distinct mask of layer1's 64 channels) on three images in one batch of the
    ResNet-18 static export. Ablation-CAM on a static export: test_static_export_matches_eager_in_batches."""
    from PIL import Image

    res = _cli("layers", model_files[("xrv_densenet121", "pt2_static")], "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["default"]
    assert any(r["name"] == doc["default"] for r in doc["layers"])

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"i{i}.png")
    out = tmp_path / "out"
    res = _cli(
        "cam", model_files[("resnet18", "pt2_static")], folder, "-o", out, "--methods", "gradcam,scorecam",
        "--layer", "layer1", "--batch-size", "3", "--no-overlays",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(list(out.glob("*.npz"))) == 3, manifest


@pytest.mark.parametrize(("family", "fmt"), [("resnet18", "pt2_static"), ("resnet18", "safetensors")])
def test_dashboard_upload_path(family: str, fmt: str, model_files: dict[tuple[str, str], Path]) -> None:
    """The bytes a user uploads, through the upload form's sidecar and the dashboard's model loader."""
    from ui.loaders import get_model, upload_spec
    from ui.uploads import form_sidecar
    from verification.cam import compute_cams

    path = model_files[(family, fmt)]
    side = form_sidecar(path.with_suffix(".json").read_bytes())
    spec = upload_spec(path.name, path.read_bytes(), sidecar_bytes=side)
    model, lock = get_model(spec)
    fam = matrix.FAMILIES[family]
    assert model.fixed_batch == matrix.expected_fixed(fmt)
    with lock:
        opts = {"scorecam": {"mode": "fast", "k": 8}}
        x = matrix.images(fam)
        res = compute_cams(model, x, methods=("gradcam", "scorecam"), target=[0, 1, 2], options=opts)
    assert all(r.maps.shape == (3, *fam.size) for r in res)
    assert torch.isfinite(torch.from_numpy(res[0].maps)).all()


def test_cli_reference_build_and_verify_on_a_static_export(
    model_files: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """`reference build` and `verify` in the CLI on the ResNet-18 exported with its batch fixed at 1, with
    --batch-size 4 (every forward chunked to 1 row): both run and verify returns a verdict document. The
    random-weight model says the same class for every image: at chance, so UNSUITABLE by E1 (with 2
    positives and 4 negatives a constant answer has Youden J ≤ 0.49 at the top of its interval, below the
    0.5 margin) and exit code 3."""
    from PIL import Image

    model = model_files[("resnet18", "pt2_static")]
    labelled = tmp_path / "labelled"
    rng = np.random.default_rng(1)
    for name in matrix.CLASSES:
        (labelled / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(labelled / name / f"{i}.png")
    bundle = tmp_path / "ref"
    res = _cli("reference", "build", model, labelled, "-o", bundle, "--all-images", "--batch-size", "4")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "verify.json"
    res = _cli(
        "verify", model, labelled, "--bundle", bundle, "--labelled", "--json", out, "--batch-size", "4",
        "--workers", "1",
    )  # fmt: skip
    doc = json.loads(out.read_text())
    assert len({im["predicted"] for im in doc["images"]}) == 1, doc["images"]  # the premise: one answer
    assert (doc["verdict"], doc["deciding_line"], res.returncode) == ("unsuitable", "E1", 3), res.stderr
    assert [ln["key"] for ln in doc["lines"]] == ["E0", "E1", "E2", "E3", "E4", "E5", "E6"]
    assert len(doc["images"]) == 6
