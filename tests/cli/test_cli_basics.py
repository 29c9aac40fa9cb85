"""The command line end to end in a subprocess: help, usage errors, layers, cam, bad models and bad files."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from .helpers import Env, Payload, run_cli

SUBCOMMANDS = {
    "layers": "--trust",
    "methods": "--json",
    "cam": "--methods",
    "consistency": "--tau",
}


def _one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert stderr.strip(), "expected a message on stderr"


def test_help_of_every_subcommand() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for name, option in SUBCOMMANDS.items():
        assert name in top.stdout
        res = run_cli(name, "--help")
        assert res.returncode == 0, res.stderr
        assert option in res.stdout
        assert "usage:" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("frobnicate",), "invalid choice"),
        (("cam", "m.safetensors", "imgs"), "--out"),
        (("cam", "m.safetensors", "imgs", "-o", "x", "--batch-size", "0"), "must be at least 1"),
        (
            ("cam", "m.safetensors", "imgs", "-o", "x", "--methods", "gradcam,nosuch"),
            "unknown method(s) nosuch",
        ),
        (("cam", "m.safetensors", "imgs", "-o", "x", "--engine", "spark"), "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2
    assert message in res.stderr
    _one_line_error(res.stderr)


def test_layers_lists_spatial_layers_and_the_default(env: Env) -> None:
    res = run_cli("layers", env.model, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    names = [layer["name"] for layer in doc["layers"]]
    # resnet18 at 64×64: layer4 is the last stage, 512 channels at 2×2 (64 / 32).
    assert doc["default"] == "layer4"
    assert {"layer1", "layer4", "conv1"} <= set(names)
    assert next(layer for layer in doc["layers"] if layer["name"] == "layer4")["output_shape"] == [
        1,
        512,
        2,
        2,
    ]
    assert all(len(layer["output_shape"]) == 4 for layer in doc["layers"])  # non-spatial ones left out
    table = run_cli("layers", env.model)
    assert table.returncode == 0
    assert any(line.startswith("* layer4 ") for line in table.stdout.splitlines())


def _cams_in_process(env: Env, path: Path, methods: tuple[str, ...]) -> dict[str, np.ndarray]:
    from verification.cam import compute_cams
    from verification.io.images import load_image, to_tensor
    from verification.io.models import load_model

    model = load_model(env.model)
    results = compute_cams(model, to_tensor(load_image(path), model), methods=methods)
    return {f"{r.method}@{r.layer}": r.maps[0] for r in results}


def _cam_manifest(env: Env, out: Path, methods: str, batch_size: int) -> dict[str, Any]:
    """Run ``cam`` on the flat image folder in one worker; its manifest."""
    res = run_cli(
        "cam", env.model, env.images, "-o", out, "--methods", methods, "--batch-size", str(batch_size),
        "--workers", "1", "--quiet",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads((out / "manifest.json").read_text())


def test_cam_writes_overlays_npz_and_manifest(env: Env, tmp_path: Path) -> None:
    from verification.batch import load_image_cams

    out = tmp_path / "cams"
    manifest = _cam_manifest(env, out, "gradcam,hirescam", batch_size=3)
    sources = sorted(env.images.iterdir())
    assert manifest["n_images"] == len(sources)
    assert manifest["n_errors"] == 0
    assert manifest["results"] == ["gradcam@layer4", "hirescam@layer4"]
    for entry, source in zip(manifest["images"], sources):
        assert Path(entry["path"]).name == source.name
        maps, raw, meta = load_image_cams(out / entry["npz"])
        assert raw["gradcam@layer4"].shape == (2, 2)
        expected = _cams_in_process(env, source, ("gradcam", "hirescam"))
        for key, cam in expected.items():
            # Batched (3 per forward, DataLoader worker) vs one image in this process: same maps.
            np.testing.assert_allclose(maps[key], cam, atol=1e-5)
        assert meta["pred"] == int(np.argmax(meta["logits"])) == entry["pred"]
        with Image.open(out / entry["overlays"]["gradcam@layer4"]) as overlay:
            assert overlay.mode == "RGB"
            with Image.open(source) as original:
                assert overlay.size == original.size  # drawn at the image's own size


def test_methods_lists_the_whole_registry() -> None:
    from verification.cam.methods import METHODS

    res = run_cli("methods", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == list(METHODS)
    assert {r["kind"] for r in rows} == {"capture", "multiscale", "perturbation", "attribution"}
    saliency = next(r for r in rows if r["name"] == "saliency")
    assert saliency["label"] == METHODS["saliency"].label
    table = run_cli("methods")
    assert table.returncode == 0
    assert any(line.split()[:2] == ["occlusion", "attribution"] for line in table.stdout.splitlines())


def test_cam_runs_pixel_attributions_from_the_registry(env: Env, tmp_path: Path) -> None:
    """Issue #16: `cam --methods saliency` was refused (the CLI listed only the CAM registry)."""
    from verification.batch import load_image_cams

    out = tmp_path / "cams"
    manifest = _cam_manifest(env, out, "saliency,gradcam", batch_size=4)
    assert manifest["n_errors"] == 0
    assert manifest["results"] == ["saliency@input", "gradcam@layer4"]
    entry = manifest["images"][0]
    maps, _, _ = load_image_cams(out / entry["npz"])
    expected = _cams_in_process(env, Path(entry["path"]), ("saliency",))
    np.testing.assert_allclose(maps["saliency@input"], expected["saliency@input"], atol=1e-5)


def test_nonexistent_model_is_a_one_line_failure(env: Env, tmp_path: Path) -> None:
    res = run_cli("cam", tmp_path / "missing.safetensors", env.images, "-o", tmp_path / "out")
    assert res.returncode == 1
    assert "missing.safetensors" in res.stderr
    assert "does not exist" in res.stderr
    _one_line_error(res.stderr)
    assert not (tmp_path / "out").exists()


def test_untrusted_pickle_is_refused_without_trust(env: Env, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(Payload(marker)))
    res = run_cli("layers", bad)
    assert res.returncode == 1
    assert "--trust" in res.stderr
    _one_line_error(res.stderr)
    assert not marker.exists(), "the pickle was executed without --trust"

    # A pickled whole module loads when the user opts in.
    from verification.io.models import load_model

    module = load_model(env.model).module
    whole = tmp_path / "whole.pt"
    torch.save(module, whole)
    shutil.copy(env.model.with_suffix(".json"), whole.with_suffix(".json"))
    refused = run_cli("layers", whole)
    assert refused.returncode == 1
    assert "--trust" in refused.stderr
    trusted = run_cli("layers", whole, "--trust", "--json")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["default"] == "layer4"


def _with_corrupt(env: Env, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "mixed"
    shutil.copytree(env.images, folder)
    (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    return folder


def test_corrupt_image_becomes_an_error_row(env: Env, tmp_path: Path) -> None:
    folder = _with_corrupt(env, tmp_path, "img03b_corrupt.png")
    out = tmp_path / "cams"
    res = run_cli("cam", env.model, folder, "-o", out, "--batch-size", "2")
    assert res.returncode == 0, res.stderr
    assert "img03b_corrupt.png" in res.stderr  # the user is told which file was skipped
    manifest = json.loads((out / "manifest.json").read_text())
    errors = [e for e in manifest["images"] if e["error"]]
    assert [Path(e["path"]).name for e in errors] == ["img03b_corrupt.png"]
    assert manifest["n_images"] == 8
    assert manifest["n_errors"] == 1
    assert len(list(out.glob("*.npz"))) == 7


def test_failure_mid_run_leaves_no_partial_output(env: Env, tmp_path: Path) -> None:
    # The corrupt file sorts last, so with --strict the run fails after several batches were written.
    folder = _with_corrupt(env, tmp_path, "zzz_corrupt.png")
    out = tmp_path / "results" / "cams"
    res = run_cli("cam", env.model, folder, "-o", out, "--batch-size", "2", "--strict")
    assert res.returncode == 1
    assert "zzz_corrupt.png" in res.stderr
    assert "--strict" in res.stderr
    _one_line_error(res.stderr)
    assert not out.exists()
    assert list((tmp_path / "results").iterdir()) == []  # no staging folder left behind


def test_existing_output_is_not_mixed_into(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "cams"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run_cli("cam", env.model, env.images, "-o", out)
    assert res.returncode == 1
    assert "--force" in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_report_refuses_hostile_json_with_a_typed_error(tmp_path: Path) -> None:
    """``report`` on JSON nested 100,000 deep used to end with "internal error: RecursionError"; that, a
    document that is not an object, and one without a verify result's fields are each one ``error:`` line
    naming the file (exit 1, no traceback)."""
    cases = {
        "deep.json": ("[" * 100_000 + "]" * 100_000, "nests deeper than 64 levels"),
        "list.json": ("[1, 2]", "not a JSON verify result"),
        "text.json": ("{not json", "is not valid JSON"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        res = run_cli("report", path, "-o", tmp_path / "r.html")
        assert res.returncode == 1, res.stderr
        assert "internal error" not in res.stderr
        assert "Traceback" not in res.stderr
        assert name in res.stderr
        assert message in res.stderr
    assert not (tmp_path / "r.html").exists()
