"""reference build → verify → report end to end in a subprocess, checked against the in-process backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .helpers import Env, run_cli


def test_reference_build_verify_and_report(env: Env, bundle: Path, tmp_path: Path) -> None:
    from verification.io.images import load_image
    from verification.io.models import load_model
    from verification.reference import load_bundle, verify

    # The bundle fixture ran 'reference build': its two files and nothing else (no staging folder left).
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["ref.json", "ref.npz"]
    assert load_bundle(bundle).counts.tolist() == [3, 3, 3]

    # Each reference image against its own class reference: the CLI's batched run must agree with
    # reference.verify on the same images, and its exit code with the verdict.
    result, table = tmp_path / "out" / "verify.json", tmp_path / "out" / "verify.csv"
    res = run_cli(
        "verify", env.model, env.labelled, "--bundle", bundle, "--labelled", "--compare-to", "label",
        "--json", result, "--csv", table, "--batch-size", "4", "--workers", "1",
    )  # fmt: skip
    doc = json.loads(result.read_text())
    assert res.returncode == (0 if doc["verdict"] == "suitable" else 3), res.stderr
    assert doc["verdict"] in res.stdout

    model = load_model(env.model)
    paths = [Path(r["image"]) for r in doc["rows"]]
    labels = [p.parent.name for p in paths]
    expected = verify(model, load_bundle(bundle), [load_image(p) for p in paths], labels, compare_to="label")
    assert doc["verdict"] == expected.verdict
    assert doc["summary"]["flagged"] == int(expected.flagged.sum())
    for row, values, n_flags in zip(doc["rows"], expected.values, expected.n_flags):
        got = np.array([np.nan if row[m] is None else row[m] for m in expected.metrics], dtype=float)
        np.testing.assert_allclose(got, values, rtol=1e-4, atol=1e-5, equal_nan=True)
        assert row["n_flags"] == n_flags
        assert row["label"] == row["reference"]
    csv_lines = table.read_text().splitlines()
    assert csv_lines[0].startswith("image,label,predicted,reference,iou")
    assert len(csv_lines) == 1 + len(paths)

    html_path = tmp_path / "report.html"
    rendered = run_cli("report", result, "-o", html_path)
    assert rendered.returncode == 0, rendered.stderr
    page = html_path.read_text()
    assert doc["verdict"].upper() in page
    assert page.count("data:image/png;base64,") >= 2  # most flagged images and their references
    assert "<script src=" not in page  # plotly is inlined: the file opens offline
    assert "Plotly.newPlot" in page


def test_verify_exit_code_follows_the_verdict_and_bad_bundles_fail(
    env: Env, bundle: Path, tmp_path: Path
) -> None:
    # Predicted-class references on other images, a corrupt file among them: an error row, still a verdict.
    folder = tmp_path / "with_bad"
    shutil.copytree(env.images, folder)
    (folder / "bad.png").write_bytes(b"not an image")
    res = run_cli("verify", env.model, folder, "--bundle", bundle, "--json", tmp_path / "v.json")
    doc = json.loads((tmp_path / "v.json").read_text())
    assert res.returncode == (0 if doc["verdict"] == "suitable" else 3)
    assert [Path(e["image"]).name for e in doc["errors"]] == ["bad.png"]
    assert doc["summary"]["images"] == len(doc["rows"]) == 7
    assert "1 unreadable image(s) left out of the verdict" in res.stdout

    missing = run_cli("verify", env.model, env.images, "--bundle", tmp_path / "nothing")
    assert missing.returncode == 1
    assert "nothing.npz" in missing.stderr
    assert "Traceback" not in missing.stderr

    broken = tmp_path / "broken"
    broken.with_suffix(".json").write_text("{not json")
    broken.with_suffix(".npz").write_bytes(b"")
    res = run_cli("verify", env.model, env.images, "--bundle", broken, "--json", tmp_path / "b.json")
    assert res.returncode == 1
    assert "broken.json" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "b.json").exists()
