"""The API, the command line and the dashboard give the same verdict and the same numbers on the demo.

One demo set (the shortcut model on the images whose marker matches the class) goes through all three doors:
``verification.verify`` with the demo's labels, lesion masks and lung masks; ``python -m verification verify
--labelled --annotations --anatomy --json``; and the dashboard's loader (``ui.loaders.verify_set``). The
verdict, the deciding line, every line's status per class with its number, and every image's numbers must
agree.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import ROOT
from verification import demo
from verification.io.images import load_image
from verification.io.models import load_model
from verification.reference import load_bundle
from verification.verdict import VerdictConfig, VerificationReport, verify

MODEL, SPLIT = "shortcut", "shortcut"


def _summary(report: VerificationReport) -> dict[str, Any]:
    lines = {
        (ln.key, c.class_name): (c.status, c.value, c.low, c.high, c.threshold)
        for ln in report.lines
        for c in ln.per_class
    }
    images = {Path(im.name).name: (im.assessable, dict(im.values), im.predicted) for im in report.images}
    return {
        "verdict": (report.verdict, report.deciding_line, report.accuracy, report.n_not_assessable),
        "classes": {c.class_name: (c.verdict, c.deciding_line) for c in report.classes},
        "lines": lines,
        "status": {ln.key: ln.status for ln in report.lines},
        "images": images,
    }


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _assert_same(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    for key in a:
        if not _close(a[key], b[key]):
            diff: object
            if isinstance(a[key], dict):
                diff = {
                    k: (a[key].get(k), b[key].get(k))
                    for k in a[key]
                    if not _close(a[key].get(k), b[key].get(k))
                }
            else:
                diff = (a[key], b[key])
            pytest.fail(f"{what}: {key} differs: {str(diff)[:800]}")


@pytest.fixture(scope="module")
def api_report() -> VerificationReport:
    model = load_model(demo.demo_model_path(MODEL), name=MODEL)
    bundle = load_bundle(demo.demo_reference_bundle(), model=model)
    items = demo.demo_images(SPLIT)
    return verify(
        model,
        bundle,
        [load_image(item.path) for item in items],
        [item.label for item in items],
        annotations=[item.load_mask("lesion") for item in items],
        anatomy=[item.load_mask("lung") for item in items],
        config=VerdictConfig(faithfulness=False),
    )


def _png(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def test_cli_gives_the_api_numbers(api_report: VerificationReport, tmp_path: Path) -> None:
    items = demo.demo_images(SPLIT)
    lesions, lungs = tmp_path / "lesions", tmp_path / "lungs"
    lesions.mkdir()
    lungs.mkdir()
    rows = ["path,label"]
    for item in items:
        rows.append(f"{item.path},{item.label}")
        if (lesion := item.load_mask("lesion")) is not None:
            _png(lesion, lesions / f"{item.path.stem}_lesion.png")
        if (lung := item.load_mask("lung")) is not None:
            _png(lung, lungs / f"{item.path.stem}_lung.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "result.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "verification",
            "verify",
            str(demo.demo_model_path(MODEL)),
            str(labels),
            "--labelled",
            "--bundle",
            str(demo.demo_reference_bundle()),
            "--annotations",
            str(lesions),
            "--anatomy",
            str(lungs),
            "--no-faithfulness",
            "--json",
            str(out),
            "-q",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode in (0, 3, 4), res.stderr
    cli = VerificationReport.from_document(json.loads(out.read_text(encoding="utf-8")))
    _assert_same(_summary(api_report), _summary(cli), "CLI vs API")


def test_dashboard_gives_the_api_numbers(api_report: VerificationReport) -> None:
    from ui import loaders

    model = load_model(demo.demo_model_path(MODEL), name=MODEL)
    handle = loaders.demo_bundle(model)
    report = loaders.verify_set(model, threading.Lock(), handle, loaders.demo_image_set(SPLIT))
    _assert_same(_summary(api_report), _summary(report), "dashboard vs API")
