"""Per-file errors become error rows in the batch commands (issue #14, item 4): one unreadable or hostile
file, or one image the model gives NaN on, never aborts ``python -m verification cam`` and never takes the
other images of its batch with it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from verification import cli
from verification.batch import Batch, CamJob, ImageItem, ModelSpec, collate_items
from verification.io.models import load_model

ROOT = Path(__file__).resolve().parents[2]
SOUND = ROOT / "assets" / "demo" / "models" / "sound.safetensors"
GOOD = sorted((ROOT / "assets" / "demo" / "images" / "test").glob("00[0-2]_*.png"))


@pytest.fixture(scope="module")
def model() -> Any:
    return load_model(SOUND)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in GOOD[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.dcm").write_bytes(b"DICM? no: " + b"\x00" * 300)
    shutil.copy(GOOD[2], folder / "loader_bug.png")
    return folder


def test_cam_command_writes_error_rows_for_bad_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two good images, two unreadable files and one on which the loader has a bug (an untyped exception with
    a huge message): exit 0, a manifest with one row per file, the good images' maps written."""
    import verification.io.images as images

    real = images.load_image

    def load_image(source: Any, *args: Any, **kwargs: Any) -> Any:
        if str(source).endswith("loader_bug.png"):
            raise ZeroDivisionError("x" * 100_000)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(images, "load_image", load_image)
    folder, out = _folder(tmp_path), tmp_path / "out"
    rc = cli.main(
        ["cam", str(SOUND), str(folder), "-o", str(out), "-q", "--workers", "0", "--batch-size", "4"]
    )
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {Path(r["path"]).name: r for r in manifest["images"]}
    assert set(rows) == {p.name for p in folder.iterdir()}
    assert manifest["n_errors"] == 3
    for name in ("empty.png", "notes.dcm", "loader_bug.png"):
        assert rows[name]["error"], name
        assert len(rows[name]["error"]) <= 300
    assert rows["loader_bug.png"]["error"].startswith("unexpected error reading this file (ZeroDivisionError")
    for p in GOOD[:2]:
        assert rows[p.name]["error"] is None
        assert (out / f"{p.stem}.npz").is_file()


def _batch(model: Any, nan_at: int | None) -> Batch:
    from verification.io.images import load_image, to_tensor

    items = []
    for i, p in enumerate(GOOD):
        t = to_tensor(load_image(p), model)[0]
        if i == nan_at:
            t = t.clone()
            t[0, 5, 5] = math.nan
        items.append(ImageItem(index=i, path=str(p), tensor=t, display=None, error=None))
    return collate_items(items)


def test_cam_job_keeps_batch_mates_of_a_nan_image(model: Any) -> None:
    job = CamJob(ModelSpec(str(SOUND)), methods=("gradcam",))
    job.setup(model)
    clean = job.run(_batch(model, None))
    rows = job.run(_batch(model, 1))
    assert [r.error is None for r in rows] == [True, False, True]
    assert [r.result is None for r in rows] == [False, True, False]
    assert "NaN or infinite" in str(rows[1].error)
    assert "sample 0 of 1" in str(rows[1].error)
    for i in (0, 2):  # run alone, the others get the numbers they get in the whole batch
        got, want = rows[i].result, clean[i].result
        assert got is not None
        assert want is not None
        assert got.maps.keys() == want.maps.keys()
        for key in want.maps:
            np.testing.assert_allclose(got.maps[key], want.maps[key], atol=1e-5)


def test_configuration_errors_still_stop_the_run(model: Any) -> None:
    """An unknown layer fails every image alike: it is raised, not turned into N error rows."""
    from verification.errors import LayerError

    job = CamJob(ModelSpec(str(SOUND)), methods=("gradcam",), layers=["no.such.layer"])
    job.setup(model)
    with pytest.raises(LayerError):
        job.run(_batch(model, None))


def test_single_image_batch_with_nan_is_an_error_row(model: Any) -> None:
    job = CamJob(ModelSpec(str(SOUND)), methods=("gradcam",))
    job.setup(model)
    batch = _batch(model, 0)
    one = Batch(x=batch.x[:1], items=batch.items[:1], ok=(0,))
    (row,) = job.run(one)
    assert "NaN or infinite" in str(row.error)
    assert torch.isnan(batch.x[0]).any()


def test_consistency_command_leaves_unreadable_images_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like cam and verify: an unreadable file in the labelled set is named and left out (exit 0); with
    --strict it fails the run with one line (exit 1). Before, it aborted the command."""
    data = tmp_path / "data"
    for label, png in (("normal", GOOD[0]), ("nodule", GOOD[1])):
        (data / label).mkdir(parents=True)
        shutil.copy(png, data / label / png.name)
        shutil.copy(GOOD[2], data / label / f"x_{png.name}")
    (data / "nodule" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc = cli.main(["consistency", str(SOUND), "--data", str(data), "-q", "--batch-size", "8"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 unreadable image(s) left out: broken.png" in out
    assert cli.main(["consistency", str(SOUND), "--data", str(data), "-q", "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "broken.png" in err[0]
    assert "--strict" in err[0]
